"""mod_authn_ldap: the `ldap` backend of mod_auth (Basic only: a directory gives no
Digest H(A1), as in lighttpd).

As lighttpd 1.4.69: the user's DN is found by searching `auth.backend.ldap.base-dn`
(subtree) with `auth.backend.ldap.filter`, each `$` (or `?`) replaced by the user name
escaped for a filter (RFC 4515), on a connection bound with `.bind-dn`/`.bind-pw` (or
anonymous); a filter starting with `,` names the DN at once (`uid=<user>` + the filter,
the name escaped for a DN).  The password is right when that DN binds with it.  An empty
password is refused unless `.allow-empty-pw`.  `.starttls` (with `.ca-file`) secures the
connections, `.timeout` (microseconds, 2 s by default) bounds each step.  A rule's
`group=` names group DNs: the user is in one when a search under it for
`(<groupmember>=<user>)` finds an entry (`.groupmember` is `memberUid` by default; with
`member` the value is the user's DN).

Each login runs in a thread of the worker (OffLoop), never in its event loop.  A
directory that is down or slow fails the login: 401 after `.timeout`, the failure
logged, as lighttpd answers.  Unlike lighttpd, a DN put in a group filter is escaped
for the filter too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared import log
from shared.config.directives import Directive, DirectiveValueError, Type

from .. import authn
from ..authn_basic import BasicOnly
from ..ldap_directory import (Directory, DirectoryError, Settings, dn_escape, filter_escape,
                              fill, ldap_uris, timeout_seconds)
from ..module import Module as BaseModule
from ..request import Request

if TYPE_CHECKING:
    from ..services import Services
    from .mod_auth import Rule


def _filter_template(text: str) -> str:
    """`$` is read as `?` (lighttpd does so for consistency with its other modules); a
    search filter without one is refused."""
    if not text.strip() or text.startswith(","):
        return text
    template = text.replace("$", "?")
    if "?" not in template:
        raise DirectiveValueError("ldap: auth.backend.ldap.filter is missing a "
                                  "replace-operator '?'")
    return template


DIRECTIVES = (
    Directive("auth.backend.ldap.hostname", Type.STRING, ""),
    Directive("auth.backend.ldap.base-dn", Type.STRING, ""),
    Directive("auth.backend.ldap.filter", Type.STRING, "", convert=_filter_template),
    Directive("auth.backend.ldap.ca-file", Type.STRING, ""),
    Directive("auth.backend.ldap.starttls", Type.BOOL, False),
    Directive("auth.backend.ldap.bind-dn", Type.STRING, ""),
    Directive("auth.backend.ldap.bind-pw", Type.STRING, ""),
    Directive("auth.backend.ldap.allow-empty-pw", Type.BOOL, False),
    Directive("auth.backend.ldap.groupmember", Type.STRING, "memberUid"),
    Directive("auth.backend.ldap.timeout", Type.STRING, "",
              doc="microseconds each LDAP step may take (2000000 by default)"),
)
authn.declare("ldap")


def settings_of(values: dict[str, Any]) -> Settings | None:
    """The directory the request's settings name, or None without a hostname."""
    uris = ldap_uris(values["auth.backend.ldap.hostname"])
    if not uris:
        return None
    return Settings(uris, values["auth.backend.ldap.bind-dn"] or None,
                    values["auth.backend.ldap.bind-pw"],
                    values["auth.backend.ldap.ca-file"] or None,
                    values["auth.backend.ldap.starttls"],
                    timeout_seconds(values["auth.backend.ldap.timeout"]))


class LdapBackend(BasicOnly):
    """Answers mod_auth's Basic questions from a directory (in a thread)."""

    def __init__(self, offloop: authn.OffLoop | None) -> None:
        self.offloop = offloop
        self.directories: dict[Settings, Directory] = {}

    def check_password(self, request: Request, realm: str, user: str,
                       password: bytes) -> "bool | authn.Pending":
        return self._login(request, None, user, password)

    def check_login(self, request: Request, rule: "Rule", user: str,
                    password: bytes) -> "bool | authn.Pending":
        """The password, then the rule's users or else its groups (lighttpd's order)."""
        return self._login(request, rule, user, password)

    def _login(self, request: Request, rule: "Rule | None", user: str,
               password: bytes) -> "bool | authn.Pending":
        values = request.settings.values
        if (not password and not values["auth.backend.ldap.allow-empty-pw"]) \
                or b"\0" in password or not values["auth.backend.ldap.filter"]:
            return False
        settings = settings_of(values)
        if settings is None:
            log.error("mod_authn_ldap", f"auth.backend.ldap.hostname not set for "
                      f"{request.uri_path}")
            return False
        directory = self.directories.get(settings)
        if directory is None:
            directory = self.directories[settings] = Directory(settings)
        login = _Login(directory, values, user.encode("utf-8", "surrogateescape"), password,
                       rule)
        if self.offloop is None:
            return login.run()
        return self.offloop.run(request, login.run)


class _Login:
    """One login's blocking steps (run in an OffLoop thread)."""

    def __init__(self, directory: Directory, values: dict[str, Any], user: bytes,
                 password: bytes, rule: "Rule | None") -> None:
        self.directory = directory
        self.base_dn = values["auth.backend.ldap.base-dn"]
        self.template = values["auth.backend.ldap.filter"]
        self.groupmember = values["auth.backend.ldap.groupmember"] or "memberUid"
        self.user, self.password, self.rule = user, password, rule

    def run(self) -> bool:
        """True when the password binds the user's DN (and the rule lets the user in);
        DirectoryError when the directory could not be asked."""
        dn = self._user_dn()
        if dn is None or not self.directory.bind_as(dn, self.password):
            return False
        rule = self.rule
        if rule is None or rule.permits(self.user.decode("utf-8", "surrogateescape")):
            return True
        return self._in_a_group(dn, rule.groups)

    def _user_dn(self) -> str | None:
        if self.template.startswith(","):
            return "uid=" + dn_escape(self.user) + self.template
        search_filter = fill(self.template, filter_escape(self.user))
        found = self.directory.search(self.base_dn, search_filter)
        if len(found) > 1:
            log.error("mod_authn_ldap", "ldap: more than one record returned.  you might "
                      f"have to refine the filter: {search_filter}")
        return found[0][0] if found else None

    def _in_a_group(self, dn: str, groups: frozenset[str]) -> bool:
        member = dn.encode("utf-8", "surrogateescape") \
            if self.groupmember == "member" else self.user
        search_filter = f"({self.groupmember}={filter_escape(member)})"
        for group in sorted(groups):
            try:
                if self.directory.search(group, search_filter):
                    return True
            except DirectoryError as err:
                log.error("mod_authn_ldap", str(err))
        return False


class Module(BaseModule):
    name = "authn_ldap"
    directives = DIRECTIVES

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        offloop = authn.OffLoop(services) if services is not None else None
        authn.register("ldap", LdapBackend(offloop))
