"""What a config's compiled pattern tells before it matches anything, read from
`re`'s own parse of it: whether matching may backtrack for long (URL rules then run
under a time limit), the literal text every match starts with (a rule is skipped
without calling the regex engine), and whether it matches at the start alone (`match`
then finds what `search` would), and whether it is one of the commonest rules
(`^literal(.*)$`, `^literal([^?]*)(\\?.*)?$`), whose match needs no regex engine.
Rules (worker/urlsubst.py) and conditions (shared/config/parser.py) ask it once, when
the config loads.
"""

from __future__ import annotations

import re
from typing import Any, Final

try:                                               # CPython's own parser
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
    from re._constants import (  # type: ignore[import-not-found]
        AT as _AT, AT_BEGINNING as _AT_BEGINNING, BRANCH as _BRANCH, LITERAL as _LITERAL,
        MAXREPEAT as _MAXREPEAT, MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT)
    _REPEAT_OPS = (MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT)
except ImportError:                                # another Python: guard every rule
    _sre_parse = None


def parse_tree(pattern: re.Pattern[str]) -> Any:
    """`re`'s own parse of `pattern` (None when this Python's parser is unknown or
    fails on it), for what a rule can tell of its pattern before matching."""
    if _sre_parse is None:
        return None
    try:
        return _sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:          # noqa: BLE001 - a parser this code does not know
        return None


def _subpatterns(node: Any) -> Any:
    """The parsed sub-patterns directly inside one node of `re`'s parse tree."""
    if hasattr(node, "data"):
        yield node
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from _subpatterns(item)


def _nested(sub: Any, repeated: bool) -> bool:
    """Whether an unbounded repeat or an alternation sits inside an unbounded repeat:
    the shapes whose backtracking can grow exponentially with the URL."""
    for op, argument in sub.data:
        if op in _REPEAT_OPS:
            _, high, item = argument
            unbounded = high == _MAXREPEAT
            if (unbounded and repeated) or _nested(item, repeated or unbounded):
                return True
        elif op is _BRANCH and repeated:
            return True
        elif any(_nested(child, repeated) for child in _subpatterns(argument)):
            return True
    return False


def may_backtrack(pattern: re.Pattern[str], tree: Any = None) -> bool:
    """Whether matching `pattern` needs a time limit (conservatively yes when the
    pattern cannot be inspected); `tree`: its parse, when the caller has it."""
    tree = tree if tree is not None else parse_tree(pattern)
    return tree is None or _nested(tree, False)


def anchored(pattern: re.Pattern[str], tree: Any = None) -> bool:
    """Whether `pattern` matches only at the target's start: a single-line pattern
    whose first item is `^`, outside any alternative.  `match` then finds what
    `search` finds, without search's trying of the later positions (~40 % less time
    for a short target); `tree` as for may_backtrack."""
    if pattern.flags & re.MULTILINE:
        return False
    tree = tree if tree is not None else parse_tree(pattern)
    return tree is not None and len(tree.data) > 0 and tree.data[0] == (_AT, _AT_BEGINNING)


def literal_prefix(pattern: re.Pattern[str], tree: Any = None) -> str:
    """The text every match of `pattern` starts the target with: the literal
    characters after a leading `^` of a case-sensitive, single-line pattern ("" when
    there is none, or the pattern cannot be inspected); `tree` as for may_backtrack."""
    tree = tree if tree is not None else parse_tree(pattern)
    if pattern.flags & re.IGNORECASE or not anchored(pattern, tree):
        return ""
    prefix = []
    for op, argument in list(tree.data)[1:]:
        if op is not _LITERAL:
            break
        prefix.append(chr(argument))
    return "".join(prefix)


# the tails, after `^` and a literal, of the commonest URL rules: on a target holding
# no newline (which `.` and `$` treat apart) each matches whenever the target starts
# with the literal, and its groups are cut from the rest of the target without the
# regex engine (PCRE's JIT makes such a match as cheap in lighttpd)
REST_TAIL: Final = 1            # (.*)$: group 1 is the rest
PATH_QUERY_TAIL: Final = 2      # ([^?]*)(\?.*)?$: 1 up to the first "?", 2 from it
PATH_BARE_QUERY_TAIL: Final = 3     # ([^?]*)(?:\?(.*))?$: 2 after the "?"
_TAILS = {r"(.*)": REST_TAIL, r"(.*)$": REST_TAIL, r"(.*)\Z": REST_TAIL,
          r"([^?]*)(\?.*)?": PATH_QUERY_TAIL, r"([^?]*)(\?.*)?$": PATH_QUERY_TAIL,
          r"([^?]*)(?:\?(.*))?": PATH_BARE_QUERY_TAIL,
          r"([^?]*)(?:\?(.*))?$": PATH_BARE_QUERY_TAIL}


def _dump(node: Any) -> str:
    """A parse (tree) as text to compare with another: its nested lists unwrapped."""
    if hasattr(node, "data"):
        node = node.data
    if isinstance(node, (tuple, list)):
        return "(" + ",".join(_dump(item) for item in node) + ")"
    return repr(node)


# _TAILS by the dump of their parse (none when this Python's parser is unknown)
_TAIL_SHAPES: Final[dict[str, int]] = {} if _sre_parse is None else {
    _dump(_sre_parse.parse(tail, 0)): shape for tail, shape in _TAILS.items()}


def tail_shape(pattern: re.Pattern[str], tree: Any = None) -> int:
    """Which of the tails above follows `^` and literal_prefix in `pattern` (0: none,
    or a case-insensitive pattern); `tree` as for may_backtrack."""
    tree = tree if tree is not None else parse_tree(pattern)
    if pattern.flags & re.IGNORECASE or not anchored(pattern, tree):
        return 0
    tail = list(tree.data)[1 + len(literal_prefix(pattern, tree)):]
    return _TAIL_SHAPES.get(_dump(tail), 0)
