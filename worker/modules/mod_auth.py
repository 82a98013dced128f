"""mod_auth: HTTP authentication for URL prefixes, lighttpd's keys and answers.

`auth.require = ( "/prefix" => ( "method" => "basic" | "digest" | "extern",
"realm" => "...", "require" => "valid-user" | "user=a|user=b|group=g|host=h",
"algorithm" => "MD5|SHA-256|SHA-512-256", "nonce_secret" => "...", "userhash" => "enable" ) )`:
the first prefix of the URL path, in the order written, decides; a `host=` is warned of at
start-up, as lighttpd does.  The user names and passwords come from the backend
`auth.backend` names (worker/authn.py; mod_authn_file gives plain, htpasswd,
htdigest).  As with lighttpd's file backends, `group=` and `host=` never match, but a
backend that knows groups (LDAP: `check_login`) is given the whole rule and decides.

- Basic: `401` with `WWW-Authenticate: Basic realm="...", charset="UTF-8"`; credentials
  are decoded as lighttpd decodes base64 (blanks skipped, what comes before a
  character outside the alphabet kept); none decoded or no `:` is a 400; more than
  1363 characters of them (1023 bytes decoded) are answered as missing.
- Digest (RFC 7616): one `WWW-Authenticate` per algorithm offered (SHA-512-256, SHA-256,
  MD5 in that order; each also as -sess), qop `auth`, `userhash` when the rule enables it.  A nonce is `time:random:MAC`, the MAC
  keyed with the rule's `nonce_secret` or else with a secret drawn when the server
  starts, so only nonces this server made are taken; one older than 600 s gets
  `stale=true`, and past 540 s a good answer carries `Authentication-Info: nextnonce`.
  Replays are refused: each nonce's highest `nc` is kept (a nonce without qop is good
  once), and a repeat gets a 401 with `stale=true`; good credentials whose `nc` is no
  hex count are a 400 (lighttpd takes them, having no count to keep).  A request whose
  `uri` is not its own target is a 400, as are missing fields and `qop=auth-int`.
- extern: `REMOTE_USER` set before (by another module) must satisfy the rule; with
  `auth.extern-authn` it is taken in place of any method.

A good login sets REMOTE_USER and AUTH_TYPE for the backends and the access log; a bad
one is logged and ends keep-alive.  `auth.cache = ( "max-age" => "600" )` keeps good
logins for max-age seconds, so a slow hash is not checked on every request: a Basic
one by its Authorization field as sent, one field a user (a request with the same
field is let through without decoding it again: a dict lookup, which compares a field
only with one whose keyed hash it shares), a Digest one by its user (H(A1)).  Other
secrets are compared in constant time.

The answer cache may replay what this module lets through.  `Authorization` joins the
key of a kept answer; an answer behind a Basic rule is kept only with `auth.cache` on
(a login that is trusted for max-age seconds anyway: the replay trusts it for the rest
of the second); behind a Digest rule never (each nonce count is checked once).  A 401
is never kept.
"""

from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Final

from shared import log
from shared.config.directives import Directive, DirectiveValueError, Type
from shared.config.feature_flags import value_bool
from shared.config.values import Array

from .. import authn
from ..http import header_text
from ..module import WAIT, HandlerResult, Module as BaseModule
from ..request import Request
from ..urlsubst import B64_STANDARD_VALUES, base64_decoded

if TYPE_CHECKING:
    from shared.config.directives import CheckResult
    from shared.config.tree import ConfigTree

_MONOTONIC: Final = time.monotonic     # a native global: no look-up in `time` a request
ALGORITHMS: Final = authn.DIGEST_ALGORITHMS    # offered in this order, as lighttpd does
NONCE_LIFETIME: Final = 600                    # seconds a nonce is good (lighttpd's)
NEXTNONCE_AFTER: Final = 540                   # past this age a good answer gets a new nonce
MAX_BASIC: Final = 1363                        # base64 characters: 1023 bytes decoded
MAX_DIGEST: Final = 8192                       # characters of Digest credentials
MAX_USERSTAR: Final = 256                      # bytes of a decoded username*
MAX_NONCES: Final = 65536                      # nonces whose nc is tracked, per worker
_LATER: Final = object()                       # the backend answers later: the request waits
CACHE_SWEEP: Final = 8                         # seconds between sweeps of expired entries
_SERVER_SECRET: Final = os.urandom(32)         # drawn in the master: the same in every worker
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_REQUIRE_HINT: Final = '(expecting "valid-user" or "user=a|user=b|group=g|host=h")'
_KNOWN_FIELDS: Final = ("method", "realm", "require", "algorithm", "nonce_secret",
                        "nonce-secret", "userhash")


# ------------------------------------------------------------------------- config
@dataclass(frozen=True, eq=False)
class Rule:
    """One auth.require entry (compared by identity: a cache key part)."""

    prefix: str
    method: str
    realm: str
    require: str                # as written (for start-up warnings)
    valid_user: bool
    users: frozenset[str]
    algorithms: frozenset[str]
    nonce_secret: bytes | None
    userhash: bool
    groups: frozenset[str] = frozenset()

    def permits(self, user: str) -> bool:
        """lighttpd's http_auth_match_rules with a user and no group or host."""
        return self.valid_user or user in self.users


@dataclass(frozen=True, eq=False)
class CachePolicy:
    """auth.cache: how long a good login is kept."""

    max_age: int


def _parse_require(text: str) -> tuple[bool, frozenset[str], frozenset[str]]:
    """valid-user, or the user= and group= names of user=a|user=b|group=g|host=h (a
    trailing `|` is allowed, as in lighttpd)."""
    if text == "valid-user":
        return True, frozenset(), frozenset()
    tokens = text.split("|")
    if len(tokens) > 1 and not tokens[-1]:
        tokens.pop()
    users, groups = [], []
    for token in tokens:
        name, eq, value = token.partition("=")
        if not eq:
            raise DirectiveValueError(
                f"error parsing auth.require 'require' field: missing '=' {_REQUIRE_HINT}. "
                f"error value: {text} error near: {token}")
        if not value:
            raise DirectiveValueError(
                f"error parsing auth.require 'require' field: missing token after '=' "
                f"{_REQUIRE_HINT}. error value: {text} error near: {token}")
        if name == "valid-user":
            raise DirectiveValueError(
                "error parsing auth.require 'require' field: valid user can not be "
                f"combined with other require rules {_REQUIRE_HINT}. error value: {text}")
        if name == "user":
            users.append(value)
        elif name == "group":
            groups.append(value)
        elif name != "host":
            raise DirectiveValueError(
                f"error parsing auth.require 'require' field: invalid/unsupported token "
                f"{_REQUIRE_HINT}. error value: {text} error near: {token}")
    return False, frozenset(users), frozenset(groups)


def _parse_algorithms(text: str) -> frozenset[str]:
    names = set()
    for part in text.split("|"):
        name = _algorithm_name(part)[0]
        if name is None:
            raise DirectiveValueError('invalid algorithm in: auth.require = ( "..." => '
                                      '( ..., "algorithm" => "..." ) )')
        names.add(name)
    return frozenset(names)


def _algorithm_name(text: str) -> tuple[str | None, bool]:
    """("MD5" or "SHA-256" or None when unknown, whether it is the -sess variant)."""
    sess = len(text) > 5 and text[-5:].lower() == "-sess"
    base = text[:-5] if sess else text
    if not base:
        return ("MD5" if not text else None), sess
    upper = base.upper()
    return (upper if upper in ALGORITHMS else None), sess


def _rule(prefix: str, fields: Any) -> Rule:
    if not isinstance(fields, Array) or (len(fields) and not fields.has_keys()):
        raise DirectiveValueError('unexpected value for auth.require; expected auth.require '
                                  '= ( "urlpath" => ( "option" => "value" ) )')
    options: dict[str, str] = {}
    for key, value in fields:
        if not isinstance(value, str):
            raise DirectiveValueError(f'a string was expected for: auth.require = ( "..." => '
                                      f'( ..., -> "{key}" <- => "..." ) )')
        if key not in _KNOWN_FIELDS:
            raise DirectiveValueError(f'the field is unknown in: auth.require = ( "..." => '
                                      f'( ..., -> "{key}" <- => "..." ) )')
        options[key] = value
    method = options.get("method", "")             # as written: " basic" is unknown
    if not method:
        raise DirectiveValueError('the method field is missing or blank in: auth.require = '
                                  '( "..." => ( ..., "method" => "..." ) )')
    if method not in SCHEMES:
        raise DirectiveValueError(f'unknown method {method} (e.g. "basic", "digest" or '
                                  f'"extern") in auth.require = ( "..." => ( ..., "method" '
                                  f'=> "...") )')
    if "realm" not in options:
        raise DirectiveValueError('the realm field is missing in: auth.require = ( "..." => '
                                  '( ..., "realm" => "..." ) )')
    if not options.get("require"):
        raise DirectiveValueError('the require field is missing or blank in: auth.require = '
                                  '( "..." => ( ..., "require" => "..." ) )')
    valid_user, users, groups = _parse_require(options["require"])
    algorithms = options.get("algorithm", "")
    secret = options.get("nonce_secret", options.get("nonce-secret"))
    return Rule(prefix, method, options["realm"], options["require"], valid_user, users,
                _parse_algorithms(algorithms) if algorithms else frozenset({"MD5"}),
                secret.encode("utf-8", "surrogateescape") if secret is not None else None,
                value_bool(options.get("userhash"), False), groups)


def parse_require(value: Array) -> tuple[Rule, ...]:
    """auth.require, checked as lighttpd checks it at start-up."""
    return tuple(_rule(prefix or "", fields) for prefix, fields in value)


def _known_backend(name: str) -> str:
    if name.strip() and not authn.is_declared(name):
        raise DirectiveValueError(f"auth.backend not supported: {name}")
    return name


def _cache_policy(value: Array) -> CachePolicy:
    """( "max-age" => "600" ); a value that is not a number gives 600, as in lighttpd."""
    max_age = 600
    for key, item in value:
        if key == "max-age":
            text = str(item).strip()
            max_age = int(text) if text.lstrip("-").isdigit() else 600
    return CachePolicy(max_age)


DIRECTIVES: Final = (
    Directive("auth.backend", Type.STRING, "", convert=_known_backend,
              doc="the backend that checks passwords (plain, htpasswd, htdigest ...)"),
    Directive("auth.require", Type.ARRAY_KVANY, (), convert=parse_require,
              doc="URL prefix => (method, realm, require, algorithm, ...)"),
    Directive("auth.extern-authn", Type.BOOL, False,
              doc="a REMOTE_USER set by another module satisfies any method"),
    Directive("auth.cache", Type.ARRAY, None, convert=_cache_policy,
              doc='keep good logins for ( "max-age" => "600" ) seconds'),
)


def rule_warnings(rules: tuple[Rule, ...]) -> list[str]:
    """What lighttpd 1.4.69 warns of at start-up in an auth.require: a `host=`, which
    never matches."""
    return ["warning parsing auth.require 'require' field: 'host' not implemented; "
            f"field value: {rule.require}" for rule in rules
            if any(token.startswith("host=") for token in rule.require.split("|"))]


def matching_rule(rules: tuple[Rule, ...], path: str, ignore_case: bool) -> Rule | None:
    """The first rule whose prefix starts the URL path (lighttpd's order)."""
    if ignore_case:
        lower = path.lower()
        return next((r for r in rules if lower.startswith(r.prefix.lower())), None)
    return next((r for r in rules if path.startswith(r.prefix)), None)


# ------------------------------------------------------------------------ nonces
def _nonce_mac(rule: Rule, algorithm: str, stamp: str) -> str:
    return hmac.new(rule.nonce_secret or _SERVER_SECRET, stamp.encode(),
                    ALGORITHMS[algorithm]).hexdigest()


def new_nonce(rule: Rule, algorithm: str, now: int) -> str:
    stamp = f"{now:x}:{int.from_bytes(os.urandom(4), 'big'):08x}"
    return f"{stamp}:{_nonce_mac(rule, algorithm, stamp)}"


def nonce_time(nonce: str) -> int | None:
    """When the nonce says it was made: up to 16 hex digits before its first `:` (none
    read as 0), as lighttpd reads it; None when no `:` follows them."""
    digits = 0
    while digits < 16 and digits < len(nonce) and nonce[digits] in _HEX:
        digits += 1
    if nonce[digits:digits + 1] != ":":
        return None
    return int(nonce[:digits], 16) if digits else 0


def nonce_made_here(rule: Rule, algorithm: str, nonce: str) -> bool:
    """Whether this server made the nonce, for this rule and algorithm."""
    stamp_time, _, rest = nonce.partition(":")
    random_part, _, mac = rest.partition(":")
    if not (0 < len(stamp_time) <= 16 and _HEX.issuperset(stamp_time)
            and len(random_part) == 8 and _HEX.issuperset(random_part)):
        return False
    expected = _nonce_mac(rule, algorithm, f"{stamp_time}:{random_part}")
    return hmac.compare_digest(expected, mac)


class NonceCounts:
    """The highest nc seen per nonce, for refusing replays (per worker, bounded)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, int]] = {}      # nonce -> (nc, made at)

    def fresh(self, nonce: str, nc: int, made: int) -> bool:
        """Record `nc` for `nonce`; False when it is not above what was seen (a replay).
        A nonce without qop has nc -1: good once."""
        last = self.seen.get(nonce)
        if last is not None and nc <= last[0]:
            return False
        if len(self.seen) >= MAX_NONCES:
            for old in list(self.seen)[: MAX_NONCES // 10]:      # the oldest first
                del self.seen[old]
        self.seen[nonce] = (nc, made)
        return True

    def sweep(self, now: int) -> None:
        self.seen = {n: v for n, v in self.seen.items() if now - v[1] <= NONCE_LIFETIME}


# ----------------------------------------------------------------- digest fields
_DIGEST_KEYS: Final = frozenset({"username", "realm", "nonce", "uri", "algorithm", "qop",
                                 "cnonce", "nc", "response", "username*", "userhash"})


def parse_digest_fields(text: str) -> dict[str, str]:
    """The known `key=value, key="value"` pairs of Digest credentials, read as lighttpd
    1.4.69 reads them (mod_auth_digest_parse_authorization): keys in that case only, a
    quoted value kept as sent (not unescaped), an unquoted one up to a comma or blank,
    anything after a value up to the next comma skipped; an unknown word is stepped
    over one character at a time.  A broken pair (no `=`, an open quote) or no comma
    after a value ends the reading, keeping what came before (missing fields then make
    the request a 400)."""
    fields: dict[str, str] = {}
    end = len(text)
    at = 0
    while at < end:
        while at < end and text[at] in " \t,":
            at += 1
        stop = at
        while stop < end and text[stop] not in "= \t":
            stop += 1
        key = text[at:stop]
        if key not in _DIGEST_KEYS:
            at += 1
            continue
        at = stop
        while at < end and text[at] in " \t":
            at += 1
        if at == end or text[at] != "=":
            return fields
        at += 1
        while at < end and text[at] in " \t":
            at += 1
        if at < end and text[at] == '"':
            at += 1
            stop = at
            while stop < end and text[stop] != '"':
                stop += 2 if text[stop] == "\\" else 1
            if stop >= end:
                return fields
        else:
            stop = at
            while stop < end and text[stop] not in ", \t":
                stop += 1
        fields[key] = text[at:stop]
        at = text.find(",", stop)
        if at < 0:
            return fields
        at += 1
    return fields


def _username_star(value: str) -> str | None:
    """An RFC 8187 `username*` (charset'lang'%XX-encoded), decoded; None if invalid."""
    charset, quote, rest = value.partition("'")
    _language, quote2, encoded = rest.partition("'")
    charset = charset.lower()
    if not (quote and quote2) or charset not in ("utf-8", "iso-8859-1"):
        return None
    try:
        raw = bytes(_percent_decode(encoded))
        name = raw.decode("utf-8" if charset == "utf-8" else "latin-1")
    except (ValueError, UnicodeDecodeError):
        return None
    if len(raw) > MAX_USERSTAR or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        return None
    return name


def _percent_decode(text: str) -> bytearray:
    out = bytearray()
    pos = 0
    while pos < len(text):
        escaped = text[pos + 1:pos + 3]
        if text[pos] == "%" and len(escaped) == 2 and _HEX.issuperset(escaped):
            out.append(int(escaped, 16))
            pos += 3
        else:
            out += text[pos].encode("utf-8")
            pos += 1
    return out


@dataclass
class DigestLogin:
    """A Digest request's credentials once checked for form."""

    user: str
    realm: str
    nonce: str
    uri: str
    algorithm: str
    sess: bool
    qop: str | None
    nc: str
    cnonce: str
    response: bytes
    userhash: bool

    def expected(self, ha1: bytes, method: str) -> bytes:
        """The response a client that knows the password sends (RFC 7616 §3.4.1)."""
        def hash_(text: str) -> Any:
            return authn.digest_hash(self.algorithm, text.encode("utf-8", "surrogateescape"))
        a1 = ha1.hex()
        if self.sess:
            a1 = hash_(f"{a1}:{self.nonce}:{self.cnonce}").hexdigest()
        a2 = hash_(f"{method}:{self.uri}").hexdigest()
        if self.qop:
            text = f"{a1}:{self.nonce}:{self.nc}:{self.cnonce}:{self.qop}:{a2}"
        else:
            text = f"{a1}:{self.nonce}:{a2}"
        return hash_(text).digest()


class Refused(Exception):
    """A Digest request refused before its password is looked at: `status` 400, or 401
    (stale when `stale_algorithm` is set)."""

    def __init__(self, status: int, why: str, stale_algorithm: str | None = None) -> None:
        super().__init__(why)
        self.status = status
        self.stale_algorithm = stale_algorithm


def digest_login(text: str, rule: Rule, target: str) -> DigestLogin:
    """The credentials after `Digest `, checked as lighttpd checks them; raises Refused."""
    if len(text) > MAX_DIGEST:
        raise Refused(400, "digest: credentials too long")
    fields = parse_digest_fields(text)
    get = fields.get
    qop, nc, cnonce = get("qop"), get("nc"), get("cnonce")
    if not ((qop is None or (nc is not None and cnonce is not None))
            and (("username" in fields) != ("username*" in fields))
            and all(k in fields for k in ("realm", "nonce", "uri", "response"))):
        raise Refused(400, "digest: missing field")
    userhash = len(get("userhash", "")) == 4     # "true" (lighttpd reads no further)
    user = get("username")
    if user is None:
        if userhash:
            raise Refused(400, 'digest: invalid "username*" with "userhash" = true')
        user = _username_star(fields["username*"])
        if user is None:
            raise Refused(400, 'digest: invalid "username*" ext-value')
    if fields["realm"] != rule.realm:
        raise Refused(401, "digest: realm mismatch")
    algorithm, sess = _algorithm_name(get("algorithm", ""))
    if algorithm is None or algorithm not in rule.algorithms:
        raise Refused(401, f"digest: ({get('algorithm', '')}): invalid")
    if sess and cnonce is None:
        raise Refused(400, f"digest: ({get('algorithm', '')}): missing field")
    response = fields["response"]
    if len(response) != authn.digest_hash(algorithm).digest_size * 2 or \
            not _HEX.issuperset(response):
        raise Refused(400, f"digest: ({response}): invalid format")
    if qop is not None and qop.lower() == "auth-int":
        raise Refused(400, "digest: qop=auth-int not supported")
    if fields["uri"] != target:
        raise Refused(400, f"digest: auth failed: uri mismatch ({target} != {fields['uri']})")
    return DigestLogin(user, fields["realm"], fields["nonce"], fields["uri"], algorithm, sess,
                       qop, nc or "", cnonce or "", bytes.fromhex(response), userhash)


# ------------------------------------------------------------------------ answers
def ask_basic(request: Request, rule: Rule) -> int:
    request.response.set_header("WWW-Authenticate", header_text(
        f'Basic realm="{rule.realm}", charset="UTF-8"'))
    return 401


def ask_digest(request: Request, rule: Rule, stale_algorithm: str | None = None) -> int:
    """401 with a challenge per algorithm (only the client's when its nonce is stale)."""
    now = int(time.time())
    offered = (stale_algorithm,) if stale_algorithm else \
        tuple(a for a in ALGORITHMS if a in rule.algorithms)
    response = request.response
    response.remove_header("WWW-Authenticate")
    for algorithm in offered:
        challenge = (f'Digest realm="{rule.realm}", charset="UTF-8", algorithm={algorithm}, '
                     f'nonce="{new_nonce(rule, algorithm, now)}", qop="auth"')
        if rule.userhash:
            challenge += ", userhash=true"
        if stale_algorithm:
            challenge += ", stale=true"
        response.add_header("WWW-Authenticate", header_text(challenge))
    return 401


def _authenticated(request: Request, user: str, auth_type: str) -> None:
    request.set_env("REMOTE_USER", user)
    request.set_env("AUTH_TYPE", auth_type)


@dataclass
class _Asked:
    """A backend question in flight for a held request."""

    rule: Rule
    credentials: str
    pending: authn.Pending


def _rule_of(request: Request) -> Rule | None:
    """The auth.require rule that protects the request's URL, if any."""
    values = request.settings.values
    rules = values["auth.require"]
    if not rules:
        return None
    return matching_rule(rules, request.uri_path, values["server.force-lowercase-filenames"])


class Module(BaseModule):
    name = "auth"
    # lighttpd 1.4.69 loads the backend module an auth.backend names (with a warning)
    companions = {"auth.backend": {"plain": "mod_authn_file", "htpasswd": "mod_authn_file",
                                   "htdigest": "mod_authn_file", "ldap": "mod_authn_ldap",
                                   "dbi": "mod_authn_dbi", "pam": "mod_authn_pam"}}
    directives = DIRECTIVES
    # Decides by settings, URL and the Authorization header alone: the header joins
    # the answer cache's key, and allows_replay judges the protected URLs.
    replay_safe = True
    keyed_headers = ("authorization",)

    @classmethod
    def prepare(cls, tree: "ConfigTree", checked: "CheckResult", compiled: Any) -> None:
        """lighttpd's start-up warnings about auth.require, with the config's others
        (logged when the server starts or reloads, and shown by -tt)."""
        for block in tree.blocks:
            rules = checked.settings.get(block.index, {}).get("auth.require")
            entry = block.keys.get("auth.require")
            if rules and entry is not None:
                checked.warnings += [f"{entry.position}: WARNING: {warning}"
                                     for warning in rule_warnings(rules)]

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        # good logins under auth.cache, with when they were checked: Basic by
        # (policy, rule, Authorization field) -> user, Digest by (policy, rule,
        # algorithm, user, userhash) -> (user, H(A1))
        self.logins: dict[tuple[Any, ...], tuple[float, Any]] = {}
        # (policy, rule, user) -> the Authorization field its Basic login is kept by
        self.basic_fields: dict[tuple[CachePolicy, Rule, str], str] = {}
        # (rule, user) -> (password, its check under way): the same login asked again
        # meanwhile waits for that check instead of starting another slow hash
        self.checking: dict[tuple[Rule, str], tuple[bytes, authn.Pending]] = {}
        self.nonces = NonceCounts()
        self.next_sweep = 0.0

    # ---------------------------------------------------------------- hooks
    def handle_uri_clean(self, request: Request) -> HandlerResult:
        rule = _rule_of(request)
        if rule is None:
            return None
        if request.settings.values["auth.extern-authn"] and self._extern_user(request, rule):
            return None
        method = rule.method     # a native call each, not a look-up and a generic call
        if method == "basic":
            return self._basic(request, rule)
        if method == "digest":
            return self._digest(request, rule)
        return self._extern(request, rule)

    def allows_replay(self, request: Request) -> bool:
        """A URL no rule protects: yes; behind Basic with auth.cache: yes (the key
        holds the credentials); behind Digest or Basic without the cache: no."""
        rule = _rule_of(request)
        return rule is None or (rule.method == "basic"
                                and request.settings.values["auth.cache"] is not None)

    def handle_subrequest(self, request: Request) -> HandlerResult:
        """A backend answered: run the phases again, this module now finding the
        answer in the request (as lighttpd re-enters its hooks after a wait)."""
        return authn.comeback_when_settled(request, "auth")

    def handle_trigger(self, now: float) -> None:
        if now < self.next_sweep:
            return
        self.next_sweep = now + CACHE_SWEEP
        self.nonces.sweep(int(time.time()))
        self.logins = {key: entry for key, entry in self.logins.items()
                       if now - entry[0] <= key[0].max_age}
        self.basic_fields = {key: field for key, field in self.basic_fields.items()
                             if (key[0], key[1], field) in self.logins}
        self.checking = {key: entry for key, entry in self.checking.items()
                         if not entry[1].done}

    # ---------------------------------------------------------------- schemes
    def _extern_user(self, request: Request, rule: Rule) -> bool:
        user = (request.env or {}).get("REMOTE_USER")
        return user is not None and rule.permits(user)

    def _extern(self, request: Request, rule: Rule) -> HandlerResult:
        return None if self._extern_user(request, rule) else 401

    def _basic(self, request: Request, rule: Rule) -> HandlerResult:
        header = _authorization(request)
        policy: CachePolicy | None = request.settings.values["auth.cache"]
        if policy is not None:
            kept = self.logins.get((policy, rule, header))
            if kept is not None and _MONOTONIC() - kept[0] <= policy.max_age:
                _authenticated(request, kept[1], "Basic")
                return None
        return self._basic_login(request, rule, header, policy)

    def _basic_login(self, request: Request, rule: Rule, header: str,
                     policy: CachePolicy | None) -> HandlerResult:
        """A login the cache does not hold, checked by the backend (apart from _basic:
        the closure it makes costs nothing to a cached login)."""
        backend = self._backend(request, "basic")
        if backend is None:
            return 500
        if header[:6].lower() != "basic ":
            return ask_basic(request, rule)
        encoded = header[6:]
        if len(encoded) > MAX_BASIC:
            return ask_basic(request, rule)
        decoded = base64_decoded(encoded.encode("utf-8", "surrogateescape"),
                                 B64_STANDARD_VALUES)
        if not decoded:
            log.error("mod_auth", f"decoding base64-string failed {encoded}")
            return 400
        name, colon, password = decoded.partition(b":")
        if not colon:
            log.error("mod_auth", f"missing ':' in {decoded!r}")
            return 400
        user = name.decode("utf-8", "surrogateescape")
        good = self._ask_backend(request, rule, header,
                                 lambda: self._check_once(request, rule, backend, user,
                                                          password))
        if good is _LATER:
            return WAIT
        if good and (rule.permits(user) or _checks_groups(backend, rule)):
            if policy is not None:
                self._keep_basic(policy, rule, header, user)
            _authenticated(request, user, "Basic")
            return None
        log.error("mod_auth", f"password doesn't match for {request.uri_path} username: "
                  f"{user} IP: {request.remote_ip}")
        request.keep_alive = False
        return ask_basic(request, rule)

    def _keep_basic(self, policy: CachePolicy, rule: Rule, header: str, user: str) -> None:
        """Keep a good Basic login by its Authorization field, one field a user: the
        field sent last replaces the one kept before.  One login has many fields that
        pass (the scheme's case, padding, and with a hash that reads a password's
        first bytes only, bcrypt's 72 or crypt's 8, any bytes after them): kept side
        by side, a user could fill the worker's memory with them."""
        user_key = (policy, rule, user)
        before = self.basic_fields.get(user_key)
        if before is not None and before != header:
            self.logins.pop((policy, rule, before), None)
        self.basic_fields[user_key] = header
        self.logins[policy, rule, header] = (_MONOTONIC(), user)

    def _check_once(self, request: Request, rule: Rule, backend: authn.Backend, user: str,
                    password: bytes) -> "bool | authn.Pending":
        """The backend's check of a password, or the one under way for the same login
        (many connections of one client log in at once on a cold cache)."""
        key = (rule, user)
        checking = self.checking.get(key)
        if checking is not None and not checking[1].done and \
                hmac.compare_digest(checking[0], password):
            checking[1].join(request)
            return checking[1]
        if _checks_groups(backend, rule):
            answer = backend.check_login(request, rule, user, password)  # type: ignore[attr-defined]
        else:
            answer = backend.check_password(request, rule.realm, user, password)
        if isinstance(answer, authn.Pending):
            self.checking[key] = (password, answer)
        return answer

    def _ask_backend(self, request: Request, rule: Rule, header: str,
                     question: Callable[[], Any]) -> Any:
        """The backend's answer: now, or as settled once it has come (the request was
        held meanwhile; _LATER while it has not come)."""
        asked = request.plugin_ctx.pop("auth", None)
        if asked is not None and asked.rule is rule and asked.credentials == header:
            return asked.pending.value
        answer = question()
        if isinstance(answer, authn.Pending):
            request.plugin_ctx["auth"] = _Asked(rule, header, answer)
            return _LATER
        return answer

    def _digest(self, request: Request, rule: Rule) -> HandlerResult:
        backend = self._backend(request, "digest")
        if backend is None:
            return 500
        header = _authorization(request)
        if header[:7].lower() != "digest ":
            return ask_digest(request, rule)
        try:
            login = digest_login(header[7:], rule, request.target_orig)
            made = self._check_nonce(rule, login)
        except Refused as refused:
            log.error("mod_auth", str(refused))
            if refused.status == 400:
                return 400
            return ask_digest(request, rule, refused.stale_algorithm)
        found = self._ha1(request, rule, backend, header, login)
        if found is _LATER:
            return WAIT
        if found is None or not hmac.compare_digest(
                login.expected(found[1], request.method), login.response):
            log.error("mod_auth", f"digest: auth failed for {login.user}: wrong password, "
                      f"IP: {request.remote_ip}")
            request.keep_alive = False
            return ask_digest(request, rule)
        user = found[0]
        if not rule.permits(user):
            return ask_digest(request, rule)
        if login.qop and (not _HEX.issuperset(login.nc) or len(login.nc) > 16):
            log.error("mod_auth", f"digest: invalid nc {login.nc}")
            return 400       # no count to guard the nonce's replays by
        if not self.nonces.fresh(login.nonce, _nc_value(login), made):
            log.error("mod_auth", f"digest: nonce replayed by {user}, IP: {request.remote_ip}")
            return ask_digest(request, rule, login.algorithm)
        if int(time.time()) - made > NEXTNONCE_AFTER:
            request.response.set_header(
                "Authentication-Info",
                f'nextnonce="{new_nonce(rule, login.algorithm, int(time.time()))}"')
        _authenticated(request, user, "Digest")
        return None

    @staticmethod
    def _check_nonce(rule: Rule, login: DigestLogin) -> int:
        """When the nonce was made.  Refused, stale, when it says no time or one past
        its lifetime (as lighttpd looks at it first), and when this server did not make
        it (stale only without a nonce_secret: a client that kept a nonce across a
        restart gets a fresh one)."""
        now = int(time.time())
        made = nonce_time(login.nonce)
        if made is None or not 0 <= now - made <= NONCE_LIFETIME:
            raise Refused(401, "digest: nonce stale", login.algorithm)
        if not nonce_made_here(rule, login.algorithm, login.nonce):
            raise Refused(401, "digest: nonce mismatch",
                          None if rule.nonce_secret else login.algorithm)
        return made

    def _ha1(self, request: Request, rule: Rule, backend: authn.Backend, header: str,
             login: DigestLogin) -> Any:
        """(user, H(A1)) from the cache or the backend; None when unknown; _LATER."""
        policy = request.settings.values["auth.cache"]
        lookup = login.user.lower() if login.userhash else login.user
        key = (policy, rule, login.algorithm, lookup, login.userhash)
        if policy is not None:
            kept = self.logins.get(key)
            if kept and _MONOTONIC() - kept[0] <= policy.max_age:
                return kept[1]
        query = authn.DigestQuery(lookup, rule.realm, login.algorithm, login.userhash)
        found = self._ask_backend(request, rule, header,
                                  lambda: backend.digest_ha1(request, query))
        if isinstance(found, tuple) and policy is not None:
            self.logins[key] = (_MONOTONIC(), found)
        return found

    @staticmethod
    def _backend(request: Request, method: str) -> authn.Backend | None:
        """The configured backend able to answer `method`; None (logged) if none is."""
        name = request.settings.values["auth.backend"]
        found = authn.backend(name) if name else None
        if found is None:
            log.error("mod_auth", f"auth.backend not configured for {request.uri_path}")
        elif method == "digest" and not found.answers_digest():
            log.error("mod_auth", f'auth.require "method" => "digest" invalid (try "basic"?) '
                      f"for {request.uri_path}")
            return None
        return found


def _checks_groups(backend: authn.Backend, rule: Rule) -> bool:
    """Whether the backend decides the rule's group= itself (LDAP's `check_login`: the
    password and the rule's users or groups at once, as lighttpd's backends do)."""
    return bool(rule.groups) and hasattr(backend, "check_login")


def _authorization(request: Request) -> str:
    """The Authorization field without trailing whitespace (the parser keeps it; lighttpd
    reads `Basic ` alone as no credentials, not as empty ones)."""
    return request.headers.get("authorization", "").rstrip(" \t")


def _nc_value(login: DigestLogin) -> int:
    return int(login.nc, 16) if login.qop and login.nc else -1


SCHEMES: Final = frozenset({"basic", "digest", "extern"})   # handle_uri_clean's
