"""The WebDAV `If` request header (RFC 4918 §10.4): parsing and evaluation.

    If = 1*No-tag-list | 1*Tagged-list
    Tagged-list = Resource-Tag 1*List      List = "(" 1*Condition ")"
    Condition = ["Not"] (State-token | "[" entity-tag "]")

The header is true when one of its lists is true for the resource it applies to (the
request's for an untagged list); a list is true when all its conditions are.  A state
token is true for a resource when it is the token of a live lock that covers it, an
entity tag when it is the resource's current one.  Every state token that appears in
the header counts as submitted, which is what unlocks a locked resource.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


class IfHeaderError(ValueError):
    """A malformed If header: 400."""


@dataclass
class Condition:
    negate: bool
    token: str = ""       # a state token (Coded-URL content), or
    etag: str = ""        # an entity tag, as written (quotes, W/)

    def holds(self, tokens_here: set[str], etag_here: str) -> bool:
        if self.token:
            found = self.token in tokens_here
        else:
            found = bool(etag_here) and _same_etag(self.etag, etag_here)
        return found != self.negate


@dataclass
class TaggedLists:
    resource: str | None                 # the Resource-Tag, None for untagged lists
    lists: list[list[Condition]] = field(default_factory=list)


def _same_etag(given: str, current: str) -> bool:
    """Strong comparison as RFC 4918 asks, but a weak tag stands for its opaque value
    (clients echo the W/ form they were given)."""
    return given.removeprefix("W/") == current.removeprefix("W/")


def parse_if(header: str) -> list[TaggedLists]:
    """The header's lists grouped by resource; raises IfHeaderError."""
    groups: list[TaggedLists] = []
    pos, end = 0, len(header)
    while True:
        pos = _skip_space(header, pos)
        if pos >= end:
            break
        char = header[pos]
        if char == "<":
            if groups and groups[0].resource is None:
                raise IfHeaderError("untagged and tagged lists mixed")
            close = _closing(header, pos, ">")
            groups.append(TaggedLists(header[pos + 1:close]))
            pos = close + 1
        elif char == "(":
            if not groups:
                groups.append(TaggedLists(None))
            conditions, pos = _parse_list(header, pos + 1)
            groups[-1].lists.append(conditions)
        else:
            raise IfHeaderError(f"unexpected {char!r} in If header")
    if not groups or any(not group.lists for group in groups):
        raise IfHeaderError("If header without a list")
    return groups


def _parse_list(header: str, pos: int) -> tuple[list[Condition], int]:
    conditions: list[Condition] = []
    while True:
        pos = _skip_space(header, pos)
        if pos >= len(header):
            raise IfHeaderError("unterminated list")
        if header[pos] == ")":
            if not conditions:
                raise IfHeaderError("empty list")
            return conditions, pos + 1
        negate = header.startswith(("Not", "not", "NOT"), pos)
        if negate:
            pos = _skip_space(header, pos + 3)
        char = header[pos:pos + 1]
        if char == "<":
            close = _closing(header, pos, ">")
            conditions.append(Condition(negate, token=header[pos + 1:close]))
        elif char == "[":
            close = _closing(header, pos, "]")
            conditions.append(Condition(negate, etag=header[pos + 1:close].strip(" \t")))
        else:
            raise IfHeaderError("a condition is a <state-token> or an [entity-tag]")
        pos = close + 1


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _closing(text: str, pos: int, char: str) -> int:
    close = text.find(char, pos + 1)
    if close < 0:
        raise IfHeaderError(f"missing {char!r}")
    return close


def submitted_tokens(groups: list[TaggedLists]) -> set[str]:
    return {condition.token for group in groups for conditions in group.lists
            for condition in conditions if condition.token}


# the state of a resource: (tokens of the locks covering it, its ETag or "")
ResourceState = Callable[[str | None], tuple[set[str], str]]


def evaluate(groups: list[TaggedLists], state: ResourceState) -> bool:
    """Whether the header is true; `state(resource_tag)` tells what a condition is
    tested against (None: the request's own resource)."""
    for group in groups:
        tokens, etag = state(group.resource)
        for conditions in group.lists:
            if all(condition.holds(tokens, etag) for condition in conditions):
                return True
    return False
