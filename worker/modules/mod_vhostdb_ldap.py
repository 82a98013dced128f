"""mod_vhostdb_ldap: the `ldap` backend of mod_vhostdb, with ldap3
(worker/ldap_directory.py).

As lighttpd 1.4.69: `vhostdb.ldap = ( "host" => "ldap.example.org", "base-dn" => ...,
"filter" => "(dc=?)", "attr" => "documentRoot", "bind-dn", "bind-pw", "ca-file",
"starttls", "timeout" )`; each `?` of the filter is the request's authority escaped for
a filter (RFC 4515), the search runs under base-dn (subtree), and the first value of
`attr` (documentRoot by default) of the first entry found is the document root.  Host,
filter and base-dn are needed (without one the key configures nothing); a filter
without `?` is refused.  `timeout` is in microseconds (2 s by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared import log
from shared.config.directives import Directive, DirectiveValueError, Type, to_bool

from .. import vhostdb_backends
from ..ldap_directory import (Directory, DirectoryError, Settings, filter_escape, fill,
                              ldap_uris, timeout_seconds)
from ..module import Module as BaseModule
from ..request import Request
from ..vhostdb_backends import Lookup, LookupFailed

if TYPE_CHECKING:
    from ..services import Services


@dataclass(frozen=True)
class VhostSearch:
    """What vhostdb.ldap asks, and of which directory."""

    directory: Settings
    base_dn: str
    template: str
    attr: str


def _search(value: Any) -> VhostSearch | None:
    options = {str(key).lower(): str(item) for key, item in value}
    template, base_dn = options.get("filter", ""), options.get("base-dn", "").strip()
    uris = ldap_uris(options.get("host", ""))
    if not template.strip() or not uris or not base_dn:
        return None
    if "?" not in template:
        raise DirectiveValueError("ldap: filter is missing a replace-operator '?'")
    try:
        starttls = to_bool(options.get("starttls", "disable"))
    except DirectiveValueError as err:
        raise DirectiveValueError(f"vhostdb.ldap starttls: {err}") from None
    settings = Settings(uris, options.get("bind-dn", "").strip() or None,
                        options.get("bind-pw"), options.get("ca-file", "").strip() or None,
                        starttls, timeout_seconds(options.get("timeout", "")))
    return VhostSearch(settings, base_dn, template,
                       options.get("attr", "").strip() or "documentRoot")


DIRECTIVES = (
    Directive("vhostdb.ldap", Type.ARRAY_KVSTRING, None, convert=_search,
              doc='( "host" => ..., "base-dn" => ..., "filter" => "(dc=?)", ... )'),
)
vhostdb_backends.BACKENDS.declare("ldap")


class LdapVhosts:
    """Looks hosts up in the directories vhostdb.ldap names (in a thread)."""

    def __init__(self) -> None:
        self.directories: dict[Settings, Directory] = {}

    def lookup(self, request: Request, authority: str) -> Lookup | None:
        search: VhostSearch | None = request.settings.values["vhostdb.ldap"]
        if search is None:
            return None
        directory = self.directories.get(search.directory)
        if directory is None:
            directory = self.directories[search.directory] = Directory(search.directory)
        search_filter = fill(search.template, filter_escape(authority.encode("utf-8",
                                                                             "surrogateescape")))

        def step() -> str:
            try:
                found = directory.search(search.base_dn, search_filter, (search.attr,))
            except DirectoryError as err:
                raise LookupFailed(str(err)) from None
            if len(found) > 1:
                log.error("mod_vhostdb_ldap", "ldap: more than one record returned.  you "
                          f"might have to refine the filter: {search_filter}")
            wanted = search.attr.lower()
            values = next((items for name, items in found[0][1].items()
                           if name.lower() == wanted), None) if found else None
            return values[0].decode("utf-8", "surrogateescape") if values else ""
        return step


class Module(BaseModule):
    name = "vhostdb_ldap"
    directives = DIRECTIVES

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        vhostdb_backends.BACKENDS.register("ldap", LdapVhosts())
