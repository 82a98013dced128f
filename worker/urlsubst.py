"""URL rules as lighttpd 1.4.69 runs them (keyvalue.c, burl.c): for mod_rewrite and
mod_redirect.

A rule is a PCRE pattern matched against the request-target as lighttpd normalises it
(worker/urlnorm.py, by default still %-encoded, unreserved escapes decoded, `%2F`
decoded in the path, dot segments removed) and a replacement compiled once into parts:

- `$0`..`$9`: the rule's groups, `%0`..`%9`: the enclosing condition's, both as they
  are; `$$` and `%%` are a literal `$` / `%`, any other `$x` / `%x` stays as written;
- `${n}` / `%{n}` (n up to 99): the same groups, %-encoded (`escpsnde` unless an
  encoder is named: `${esc:n}`, `${escape:n}`, `${escnde:n}`, `${escpsnde:n}`,
  `${noesc:n}`, `${noescape:n}`, `${encb64u:n}`, `${decb64u:n}`, each optionally
  with `tolower:` / `toupper:`).  As in lighttpd 1.4.69, `toupper:` lowercases and a
  case prefix alone (no encoder) yields nothing;
- `${url.scheme}`, `${url.authority}`, `${url.port}` (the listening port),
  `${url.path}`, `${url.query}`, and `${qsa}` (the query appended with `?` or `&`).

Keys and replacements are normalised at load as lighttpd does (upper-case hex in
escapes, raw UTF-8 octets %-encoded), so `é` in a config matches `%C3%A9` in a URL.
"""

from __future__ import annotations

import base64
import re
import signal
from dataclasses import dataclass
from typing import Any, Callable, Final, Sequence, cast

from shared.config.directives import DirectiveValueError
from shared.config.pattern_shape import (
    PATH_QUERY_TAIL, REST_TAIL, anchored, literal_prefix, may_backtrack, parse_tree,
    tail_shape)
from shared.config.pcre import UnsupportedPattern, compile_pcre

from .bytesets import all_kept
from .request import Request
from .urlnorm import AS_IS_TABLE, normalised

# burl_append flags
ENCODE_ALL: Final = 1
ENCODE_NDE: Final = 2
ENCODE_PSNDE: Final = 4
ENCODE_NONE: Final = 8
ENCODE_B64U: Final = 16
DECODE_B64U: Final = 32
TOLOWER: Final = 64

_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                        b"-._~")
_DIGITS: Final = frozenset("0123456789")
_HEXDIGITS: Final = frozenset(b"0123456789ABCDEFabcdef")

# one part of a compiled replacement: literal text, or (kind, argument, flags)
# (Final: the compiled code reads them as constants, not from the module's dict)
RULE_GROUP: Final = 0
CONDITION_GROUP: Final = 1
URL_PART: Final = 2
QSA: Final = 3
PORT: Final = 4
Part = str | tuple[int, int | str, int]


def rule_target(request: Request) -> str:
    """What rules match: the request's target in origin form (the path of an
    absolute-form target), normalised under server.http-parseopts."""
    target = request.target
    if target is request.plain_target:      # set_target found it normalised as it is
        return target
    if not target.startswith("/") and target != "*":
        path, mark, query = target.partition("?")
        target = request.uri_path_raw + mark + query
    return normalised(target, request.url_flags)


# --------------------------------------------------------------- normalising
def _high_bytes_escaped(text: str, escape: bytes) -> str:
    data = text.encode("utf-8", "surrogateescape")
    if all(byte < 0x80 for byte in data):
        return text
    return "".join(chr(byte) if byte < 0x80 else (escape + b"%02X" % byte).decode()
                   for byte in data)


def normalize_key(pattern: str) -> str:
    """A rule's pattern as lighttpd compiles it: hex of `%xx` in upper case, raw
    UTF-8 octets as `%XX` (the form they take in a normalised target)."""
    pattern = re.sub(r"%[0-9a-fA-F]{2}", lambda m: m.group().upper(), pattern)
    return _high_bytes_escaped(pattern, b"%")


def normalize_value(replacement: str) -> str:
    """A replacement as lighttpd keeps it: `%%xx` in upper case, raw UTF-8 as `%%XX`."""
    replacement = re.sub(r"%%[0-9a-fA-F]{2}", lambda m: m.group().upper(), replacement)
    return _high_bytes_escaped(replacement, b"%%")


# ---------------------------------------------------------------- compiling
_ENCODERS: Final = (("esc:", ENCODE_ALL), ("escape:", ENCODE_ALL), ("escnde:", ENCODE_NDE),
                    ("escpsnde:", ENCODE_PSNDE), ("noesc:", ENCODE_NONE),
                    ("noescape:", ENCODE_NONE), ("tolower:", TOLOWER),
                    ("toupper:", TOLOWER),   # sic: lighttpd 1.4.69 lowercases here too
                    ("encb64u:", ENCODE_B64U), ("decb64u:", DECODE_B64U))
_URL_PARTS: Final = ("scheme", "authority", "port", "path", "query")


class _Truncated(Exception):
    """A `${...}` lighttpd cannot read: the replacement ends there."""


def _skip_to(text: str, position: int, char: str) -> int:
    found = text.find(char, position)
    if found < 0:
        raise _Truncated
    return found


def _extension(text: str, start: int, sigil: str) -> tuple[Part | None, int]:
    """One `${...}` / `%{...}` from `start` (at the `{`): its part and the position
    after its `}` (pcre_keyvalue_buffer_subst_ext)."""
    position, flags, end = start + 1, 0, len(text)
    while position < end and text[position] not in _DIGITS and text[position] != "}":
        rest = text[position:position + 10]
        for prefix, flag in _ENCODERS:
            if rest.startswith(prefix):
                flags |= flag
                position += len(prefix)
                break
        else:
            if rest.startswith(("esc", "no", "to")):       # an unknown encoder
                position = _skip_to(text, position, ":") + 1
            elif rest.startswith("url."):
                close = _skip_to(text, position, "}")
                name = text[position + 4:close]
                if name == "port":
                    return (PORT, 0, 0), close + 1
                return ((URL_PART, name, flags) if name in _URL_PARTS else None), close + 1
            elif rest.startswith("qsa}"):
                return (QSA, 0, flags), position + 4
            else:
                position += 1                               # an unknown character
    if position >= end:
        raise _Truncated
    if text[position] == "}":
        return None, position + 1
    number = int(text[position])
    position += 1
    if position < end and text[position] in _DIGITS:
        number = number * 10 + int(text[position])
        position += 1
    if position >= end or text[position] != "}":
        position = _skip_to(text, position, "}")
    kind = RULE_GROUP if sigil == "$" else CONDITION_GROUP
    return (kind, number, flags or ENCODE_PSNDE), position + 1


def compile_replacement(text: str) -> tuple[Part, ...]:
    """The replacement's parts (pcre_keyvalue_buffer_subst, done once at load)."""
    text = normalize_value(text)
    parts: list[Part] = []
    literal: list[str] = []
    position, end = 0, len(text)

    def add(part: Part | None) -> None:
        if part is not None:
            if literal:
                parts.append("".join(literal))
                literal.clear()
            parts.append(part)

    while position < end:
        char = text[position]
        if char not in "$%" or position + 1 >= end:
            literal.append(char)
            position += 1
            continue
        following = text[position + 1]
        if following == "{":
            try:
                part, position = _extension(text, position + 1, char)
            except _Truncated:
                break
            add(part)
        elif following in _DIGITS:
            add((RULE_GROUP if char == "$" else CONDITION_GROUP, int(following), 0))
            position += 2
        else:
            literal.append(char if following == char else char + following)
            position += 2
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


# ----------------------------------------------------------------- encoders
def percent_encoded(data: bytes, keep: frozenset[int], double: bool) -> bytes:
    """%-encode all but `keep`; unless `double`, an escape stays one (decoded when it
    names an unreserved character)."""
    out = bytearray()
    index, end = 0, len(data)
    while index < end:
        byte = data[index]
        if not double and byte == 0x25 and index + 2 < end and \
                data[index + 1] in _HEXDIGITS and data[index + 2] in _HEXDIGITS:
            value = int(data[index + 1:index + 3], 16)
            out += bytes((value,)) if value in _UNRESERVED else data[index:index + 3]
            index += 3
            continue
        out += bytes((byte,)) if byte in keep else b"%%%02X" % byte
        index += 1
    return bytes(out)


_PATH_SAFE: Final = _UNRESERVED | frozenset(b"/")
_BASE64_LETTERS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
B64_URL_VALUES: Final = {byte: value for value, byte in enumerate(_BASE64_LETTERS + b"-_")}
B64_STANDARD_VALUES: Final = {byte: value for value, byte in enumerate(_BASE64_LETTERS + b"+/")}
_B64_SKIPPED: Final = frozenset(range(1, 33))     # controls and space


def base64_decoded(data: bytes, values: dict[int, int] = B64_URL_VALUES) -> bytes:
    """base64 (url-safe by default) decoded as lighttpd's li_base64_dec reads it:
    controls and spaces skipped, decoding stops at the first other octet outside the
    alphabet (a `=` pad, a `/`, a `?`) and keeps what came before; a dangling sixth
    bit group, or a NUL reached before the end, gives nothing."""
    out = bytearray()
    group = count = 0
    stop: int | None = None
    for byte in data:
        value = values.get(byte)
        if value is None:
            if byte in _B64_SKIPPED:
                continue
            stop = byte
            break
        group = group << 6 | value
        count += 1
        if count & 3 == 0:
            out += group.to_bytes(3, "big")
            group = 0
    tail = count & 3
    if tail == 1 or stop == 0:
        return b""
    if tail == 3:
        out += (group >> 2).to_bytes(2, "big")
    elif tail == 2:
        out.append(group >> 4)
    return bytes(out)


def _lowercase(data: bytes) -> bytes:
    """ASCII letters to lower case, escapes left as they are (burl_offset_tolower)."""
    return re.sub(rb"%[0-9A-Fa-f]{2}|[A-Z]+", lambda m: m.group() if m.group()[:1] == b"%"
                  else m.group().lower(), data)


def burl_append(text: str, flags: int) -> str:
    """`text` as lighttpd's burl_append writes it with `flags`."""
    if not text or flags == 0:
        return text
    data = text.encode("utf-8", "surrogateescape")
    if flags & ENCODE_NONE:
        result = data
    elif flags & ENCODE_ALL:
        result = percent_encoded(data, _UNRESERVED, True)
    elif flags & ENCODE_NDE:
        result = percent_encoded(data, _UNRESERVED, False)
    elif flags & ENCODE_PSNDE:
        result = percent_encoded(data, _PATH_SAFE, False)
    elif flags & ENCODE_B64U:
        result = base64.urlsafe_b64encode(data).rstrip(b"=")
    elif flags & DECODE_B64U:
        result = base64_decoded(data)
    else:
        return ""                           # a case change alone writes nothing
    if flags & TOLOWER:
        result = _lowercase(result)
    return result.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------- expanding
@dataclass(slots=True)
class UrlParts:
    """What `${url.*}` and `${qsa}` read: lighttpd's r->uri of the request."""

    scheme: str
    authority: str
    port: int
    path: str
    query: str | None          # None: the target has no `?`


def url_parts(request: Request, target: str) -> UrlParts:
    """The URL of `request` whose normalised target is `target`."""
    path, mark, query = target.partition("?")
    authority = request.host or request.settings.values["server.name"]
    port = request.socket_spec.rpartition(":")[2]
    return UrlParts(request.scheme, authority, int(port) if port.isdigit() else 0, path,
                    query if mark else None)


def expand(parts: tuple[Part, ...], groups: re.Match[str] | tuple[str | None, ...],
           condition_groups: tuple[str, ...], url: UrlParts) -> str:
    """The replacement with its references filled in.  The rule's groups are read
    from its match one by one (cheaper than making the tuple of them all), so
    `parts` must hold none past them (without_missing_groups)."""
    out: list[str] = []
    for part in parts:
        if type(part) is str:
            out.append(part)
            continue
        kind, argument, flags = cast("tuple[int, int | str, int]", part)
        if kind == RULE_GROUP:
            value = groups[cast(int, argument)]
            if value:                       # None: the group took no part in the match
                out.append(burl_append(value, flags))
        elif kind == CONDITION_GROUP:
            number = cast(int, argument)
            if number < len(condition_groups):
                out.append(burl_append(condition_groups[number], flags))
        elif kind == URL_PART:
            value = getattr(url, cast(str, argument))
            out.append(burl_append(value or "", flags))
        elif kind == PORT:
            out.append(str(url.port))
        elif url.query is not None:         # QSA
            if any("?" in piece for piece in out):
                if url.query:
                    out.append("&")
            else:
                out.append("?")
            out.append(burl_append(url.query, flags))
    return "".join(out)


# ------------------------------------------------------------------ patterns
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A rule's key, normalised and compiled; DirectiveValueError when it cannot be."""
    try:
        return compile_pcre(normalize_key(pattern))
    except UnsupportedPattern as err:
        raise DirectiveValueError(str(err)) from None
    except re.error as err:
        raise DirectiveValueError(f'pcre2_compile failed for "{pattern}": {err}') from None


# ------------------------------------------------------------ match limits
MATCH_SECONDS: Final = 0.25     # a rule that backtracks longer fails the request (lighttpd:
                         # PCRE2's match limit, an error from pcre2_match)


class MatchTooLong(Exception):
    """A rule's pattern ran past MATCH_SECONDS on this target."""


Finder = Callable[[str], "re.Match[str] | None"]   # a compiled pattern's search or match


def _stop_match(signum: int, frame: Any) -> None:
    raise MatchTooLong


def guarded_search(find: Finder, target: str) -> re.Match[str] | None:
    """`find(target)` (a rule's search or match), stopped by a timer signal after
    MATCH_SECONDS (the regex engine checks for signals while it backtracks).  Outside
    the main thread, where no handler can be set, the search runs unguarded."""
    try:
        previous = signal.signal(signal.SIGALRM, _stop_match)
    except ValueError:
        return find(target)
    signal.setitimer(signal.ITIMER_REAL, MATCH_SECONDS)
    try:
        return find(target)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: re.Pattern[str]
    # pattern.match for a pattern anchored at the start (shared/config/pattern_shape.py:
    # it finds what search finds, trying no later position), else pattern.search
    find: Finder
    parts: tuple[Part, ...]
    blank: bool                 # an empty replacement: stop looking, change nothing
    once: bool = True           # mod_rewrite: no more rewriting after this one
    reads_url: bool = False     # it has ${url.*} or ${qsa}
    guarded: bool = False       # its pattern may backtrack for long: time-limited
    prefix: str = ""            # what every target it matches starts with
    tail: int = 0               # a known tail after `^prefix` (pattern_shape.tail_shape)
    # its replacement is literals of urlnorm.AS_IS_TABLE and `$n` as they are: from a
    # target all_kept(AS_IS_TABLE) holds for, it makes another
    keeps_plain: bool = False


def compile_rules(pairs: Sequence[tuple[str, str]], once: bool = True) -> tuple[Rule, ...]:
    rules = []
    for key, value in pairs:
        parts = compile_replacement(value)
        reads_url = any(type(part) is tuple and part[0] in (URL_PART, QSA, PORT)
                        for part in parts)
        pattern = compile_pattern(key)
        parts = without_missing_groups(parts, pattern.groups)
        tree = parse_tree(pattern)               # read once for both of them
        find = pattern.match if anchored(pattern, tree) else pattern.search
        rules.append(Rule(pattern, find, parts, not value, once, reads_url,
                          may_backtrack(pattern, tree), literal_prefix(pattern, tree),
                          tail_shape(pattern, tree), _keeps_plain(parts)))
    return tuple(rules)


def _keeps_plain(parts: tuple[Part, ...]) -> bool:
    """Whether a replacement of `parts` is plain whenever the rule's groups are."""
    return all(all_kept(part, AS_IS_TABLE) if type(part) is str
               else part[0] == RULE_GROUP and part[2] == 0 for part in parts)


def without_missing_groups(parts: tuple[Part, ...], groups: int) -> tuple[Part, ...]:
    """`parts` without the `$n` past a pattern's `groups`: they yield nothing."""
    return tuple(part for part in parts if type(part) is str or part[0] != RULE_GROUP
                 or cast(int, part[1]) <= groups)


_NO_URL: Final = UrlParts("", "", 0, "", None)


def _search(rule: Rule, target: str) -> re.Match[str] | None:
    """The rule's pattern matched against `target` by the regex engine."""
    try:
        return guarded_search(rule.find, target) if rule.guarded else rule.find(target)
    except MatchTooLong:
        raise MatchTooLong(f'matching "{rule.pattern.pattern}" stopped after '
                           f"{MATCH_SECONDS} s while processing uri: {target}") from None


def _tail_groups(tail: int, target: str, start: int) -> tuple[str | None, ...]:
    """The groups the regex engine finds for a rule of a known `tail` (pattern_shape)
    on `target`, which starts with the rule's literal and holds no newline."""
    if tail == REST_TAIL:
        return target, target[start:]
    mark = target.find("?", start)
    if mark < 0:
        return target, target[start:], None
    return target, target[start:mark], \
        target[mark:] if tail == PATH_QUERY_TAIL else target[mark + 1:]


def substitute(rules: tuple[Rule, ...], request: Request,
               condition_groups: tuple[str, ...]) -> tuple[Rule, str] | None:
    """The first rule that matches the request's target and its filled-in replacement
    (pcre_keyvalue_buffer_process); None when none matches or that rule is blank.
    Raises MatchTooLong for a rule that backtracks past its time limit."""
    target = rule_target(request)
    for rule in rules:
        if rule.prefix and not target.startswith(rule.prefix):
            continue                # no call into the regex engine, which costs more
        match: re.Match[str] | tuple[str | None, ...] | None
        if rule.tail and "\n" not in target:
            match = _tail_groups(rule.tail, target, len(rule.prefix))
        else:
            match = _search(rule, target)
            if match is None:
                continue
        if rule.blank:
            return None
        url = url_parts(request, target) if rule.reads_url else _NO_URL
        return rule, expand(rule.parts, match, condition_groups, url)
    return None
