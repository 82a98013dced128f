"""Substitution of regex captures into rewrite / redirect targets.

`$0`..`$9` come from the rule's own pattern, `%0`..`%9` from the regex condition
around the rule (lighttpd's convention).  A `\\` before `$` or `%` keeps it literal.
A group that did not take part in the match is empty.
"""

from __future__ import annotations

import re
from typing import Final, Sequence

_REFERENCE: Final = re.compile(r"\\([$%])|([$%])(\d)")


def expand(template: str, rule_groups: Sequence[str],
           condition_groups: Sequence[str]) -> str:
    """Replace `$n` / `%n` in `template`; out-of-range references become empty."""
    if "$" not in template and "%" not in template:
        return template

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(1)
        groups = rule_groups if match.group(2) == "$" else condition_groups
        number = int(match.group(3))
        return groups[number] if number < len(groups) else ""

    return _REFERENCE.sub(replace, template)


def match_groups(match: re.Match[str]) -> tuple[str, ...]:
    """`$0`..`$n` of a rule match, unmatched groups as ""."""
    return (match.group(0),) + match.groups("")
