"""mod_rewrite: change the request's URL by regex rules, as lighttpd 1.4.69 does.

Rules (regex => replacement, worker/urlsubst.py) match the request-target as lighttpd
normalises it (path and query, still %-encoded).  The first rule that matches
replaces the target, and the request's phases run again for it (COMEBACK): the
config's conditions see the new URL.

- `url.rewrite-once` (and its old names `url.rewrite-final`, `url.rewrite`): after
  such a rule the request is not rewritten again;
- `url.rewrite-repeat`: the rules are tried again on the new URL;
- `url.rewrite-if-not-file` (once) and `url.rewrite-repeat-if-not-file` (repeat): in
  the physical phase, only when the path does not name a regular file.

As in lighttpd, the keys of one group (the four URL ones; the two file ones) go
together: the last matching config block that sets any of them supplies the whole
list, once-rules before repeat-rules.  A rule with an empty replacement stops the
search; a replacement that does not start with `/`, or more than 100 rewrites of one
request, fail the request (500; lighttpd drops the connection).  The new target is
parsed as a client's would be: control characters or octets that never occur in
UTF-8 (from `${decb64u:n}`, say) make it a bad request (400).  A rule whose pattern
backtracks past its time limit fails the request (500), as a PCRE2 match-limit error
does in lighttpd.
"""

from __future__ import annotations

import stat
from typing import Any, Callable, Final

from shared import log
from shared.config.directives import Directive, Type

from ..module import COMEBACK, ERROR, HandlerResult, Module as BaseModule
from ..request import Request
from ..urlnorm import normalised, normalised_plain, refusal
from ..urlsubst import MatchTooLong, Rule, compile_rules, substitute

MAX_REWRITES: Final = 100    # lighttpd's "ENDLESS LOOP IN rewrite-rule" limit


class RuleList:
    """The rules of one directive in one config block.  Never shared between blocks:
    its identity tells which block set the directive."""

    __slots__ = ("rules",)

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules


def _rules_of(once: bool) -> Callable[[tuple[tuple[str, str], ...]], RuleList]:
    """The directive's converter: its rules, compiled, marked once or repeat."""
    def convert(pairs: tuple[tuple[str, str], ...]) -> RuleList:
        return RuleList(compile_rules(pairs, once))
    return convert


# in lighttpd's order within a block: once-rules first
URL_KEYS: Final = ("url.rewrite-once", "url.rewrite-final", "url.rewrite", "url.rewrite-repeat")
FILE_KEYS: Final = ("url.rewrite-if-not-file", "url.rewrite-repeat-if-not-file")
_REPEATING: Final = frozenset({"url.rewrite-repeat", "url.rewrite-repeat-if-not-file"})

DIRECTIVES: Final = tuple(Directive(key, Type.ARRAY_KVSTRING, RuleList(()),
                                    convert=_rules_of(key not in _REPEATING))
                          for key in URL_KEYS + FILE_KEYS)


class _State:
    """Per request, across its COMEBACKs (lighttpd's handler_ctx)."""

    __slots__ = ("calls", "finished")

    def __init__(self) -> None:
        self.calls = 0
        self.finished = False


class Module(BaseModule):
    name = "rewrite"
    replay_safe = True
    directives = DIRECTIVES

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        # which block each RuleList comes from (0: the global one)
        self._origin: dict[int, int] = {id(config.globals[key]): 0
                                        for key in URL_KEYS + FILE_KEYS}
        for block in config.blocks:
            for key in URL_KEYS + FILE_KEYS:
                if key in block.settings:
                    self._origin[id(block.settings[key])] = block.index
        self._chosen: dict[tuple[int, ...], tuple[tuple[Rule, ...], str]] = {}
        # a group no config block sets has the same rules for every request (an
        # attribute each: a tuple of keys would be hashed at every look-up)
        self._fixed_url = _fixed(config, URL_KEYS)
        self._fixed_file = _fixed(config, FILE_KEYS)

    def _rules(self, request: Request, keys: tuple[str, ...],
               fixed: tuple[tuple[Rule, ...], str] | None) -> tuple[tuple[Rule, ...], str]:
        """The rules in force for one group of keys, and the key whose condition
        gives `%n`: those set by the latest matching block that sets any of them
        (`fixed`, the group's when no block sets it)."""
        if fixed is not None:
            return fixed
        values = request.settings.values
        identity = tuple(id(values[key]) for key in keys)
        chosen = self._chosen.get(identity)
        if chosen is None:
            origins = [self._origin.get(number, 0) for number in identity]
            chosen = self._chosen[identity] = _combined(values, keys, origins)
        return chosen

    def handle_uri_raw(self, request: Request) -> HandlerResult:
        rules, key = self._rules(request, URL_KEYS, self._fixed_url)
        return _rewrite(request, rules, key) if rules else None

    def handle_physical(self, request: Request) -> HandlerResult:
        rules, key = self._rules(request, FILE_KEYS, self._fixed_file)
        if not rules:
            return None
        found = request.physical_lookup()
        if not isinstance(found, int) and stat.S_ISREG(found.st_mode):
            return None
        return _rewrite(request, rules, key)


def _fixed(config: Any, keys: tuple[str, ...]) -> tuple[tuple[Rule, ...], str] | None:
    """The rules of a group of keys no config block sets (None when one does)."""
    if any(key in block.settings for block in config.blocks for key in keys):
        return None
    return _combined(config.globals, keys, [0] * len(keys))


def _combined(values: Any, keys: tuple[str, ...],
              origins: list[int]) -> tuple[tuple[Rule, ...], str]:
    """The rules of the keys set by the newest block among `origins` (one per key), in
    key order, and the first of those keys."""
    newest = max(origins)
    taken = [key for key, origin in zip(keys, origins) if origin == newest]
    return tuple(rule for key in taken for rule in values[key].rules), taken[0]


def _rewrite(request: Request, rules: tuple[Rule, ...], key: str) -> HandlerResult:
    """lighttpd's process_rewrite_rules: COMEBACK with the new target, None to go on."""
    state: _State | None = request.plugin_ctx.get("rewrite")
    if state is not None:
        state.calls += 1
        if state.calls > MAX_REWRITES:
            log.error("mod_rewrite.c", "ENDLESS LOOP IN rewrite-rule DETECTED ... aborting "
                      "request, perhaps you want to use url.rewrite-once instead of "
                      f"url.rewrite-repeat ({request.target_orig})")
            return ERROR
        if state.finished:
            return None
    plain = request.target is request.plain_target
    try:
        found = substitute(rules, request, request.settings.captures(key))
    except MatchTooLong as err:
        log.error("mod_rewrite.c", str(err))
        return ERROR
    if found is None:
        return None
    rule, target = found
    if not target.startswith("/"):
        log.error("mod_rewrite.c", "mod_rewrite invalid result (not beginning with '/') "
                  f"while processing uri: {request.target}")
        return ERROR
    if state is None:
        state = request.plugin_ctx["rewrite"] = _State()
    if rule.once:
        state.finished = True
    flags = request.url_flags
    target = normalised_plain(target, flags) if plain and rule.keeps_plain \
        else normalised(target, flags)
    if refusal(target, flags, vetted=True) is not None:   # as a client's target
        return 400
    request.internal_redirect(target, normalised=True)
    return COMEBACK
