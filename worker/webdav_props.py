"""WebDAV resources and their properties, as PROPFIND shows them.

A `Resource` is a URL path of a share with its file and a fresh stat() (lighttpd's
mod_webdav does not trust the stat cache either: the files change under it).  The
live properties (RFC 4918 §15) come from that stat; dead properties and locks from
the share's store, read once for all the resources one PROPFIND walks
(`PropertyView`), not once per resource, so a Depth: 1 answer of a big collection
costs three queries.  A resource's `<D:response>` that shows no lock depends on its
URL, its stat, its dead properties and the request's selection and settings alone:
it is kept (RENDERED_MAX per worker, once the file's last change is settled: see
worker/settled.py) and given again while the stat is the same.
"""

from __future__ import annotations

import os
import re
import time
from stat import S_ISDIR
from typing import Callable, Final
from urllib.parse import quote

from .static import stat_etag, content_type_for, last_modified
from .settled import settled
from .webdav_store import INFINITY, Lock, Store
from .webdav_xml import (DAV, Name, dav_element, escape_text, property_xml,
                         response_with_propstats)

SUPPORTED_LOCK: Final = dav_element("supportedlock", "".join(
    dav_element("lockentry", dav_element("lockscope", dav_element(scope))
                + dav_element("locktype", dav_element("write")))
    for scope in ("exclusive", "shared")))
COLLECTION_TYPE: Final = dav_element("resourcetype", dav_element("collection"))
FILE_TYPE: Final = dav_element("resourcetype")
DIRECTORY_MIME: Final = dav_element("getcontenttype", "httpd/unix-directory")
RENDERED_MAX: Final = 4096        # kept <D:response> texts per worker
_HREF_SAFE: Final = "/-_.~!$&'()*+,;=:@"
_HREF_AS_IS: Final = re.compile(r"[A-Za-z0-9/\-_.~!$&'()*+,;=:@]*")   # what quote() leaves


def href(url: str) -> str:
    if _HREF_AS_IS.fullmatch(url):
        return url
    return quote(url.encode("utf-8", "surrogateescape"), safe=_HREF_SAFE)


def is_live(name: Name) -> bool:
    return name[0] == DAV and name[1] in LIVE_PROPERTIES


class Resource:
    """A resource named by a URL path: where it is on disk and what is there."""

    __slots__ = ("url", "path", "st", "is_collection")

    def __init__(self, url: str, path: str, st: os.stat_result | None) -> None:
        """`st`: the stat of `path`, just taken (None: nothing is there)."""
        self.path = path
        self.st = st
        self.is_collection = st is not None and S_ISDIR(st.st_mode)
        self.url = url + "/" if self.is_collection and not url.endswith("/") else url

    @property
    def exists(self) -> bool:
        return self.st is not None

    @property
    def found(self) -> os.stat_result:
        """The stat of a resource that exists: only those have properties."""
        st = self.st
        assert st is not None
        return st

    @property
    def parent_url(self) -> str:
        return self.url.rstrip("/").rpartition("/")[0] + "/"


def resource_at(url: str, path: str) -> Resource:
    """The resource named by `url`, stat'ed now at `path` (with a trailing slash: a
    directory only)."""
    st: os.stat_result | None
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    return Resource(url, path.rstrip("/") or "/", st)


def active_lock(lock: Lock) -> str:
    """A lock as lockdiscovery shows it."""
    remaining = max(int(lock.expires - time.time()), 0)
    depth = "infinity" if lock.depth == INFINITY else "0"
    owner = dav_element("owner", lock.owner_xml) if lock.owner_xml else ""
    return dav_element("activelock", "".join((
        dav_element("locktype", dav_element(lock.kind)),
        dav_element("lockscope", dav_element(lock.scope)),
        dav_element("depth", depth), owner,
        dav_element("timeout", f"Second-{remaining}"),
        dav_element("locktoken", dav_element("href", escape_text(lock.token))),
        dav_element("lockroot", dav_element("href", escape_text(href(lock.root)))))))


class Selection:
    """What a PROPFIND asks for: "allprop", "propname" or "prop" with the named
    properties (`plan`, see wanted), and the number its answers are kept under."""

    __slots__ = ("mode", "plan", "key")

    def __init__(self, mode: str, names: tuple[Name, ...] = ()) -> None:
        self.mode = mode
        self.plan = wanted(names)
        self.key = _selection_number((mode, *names))


_rendered: Final[dict[tuple, tuple[dict, str]]] = {}
# each selection kept texts were rendered for, by a number: a kept text's key holds
# that number, which hashes and compares at once, not the names asked for
_selection_numbers: Final[dict[tuple, int]] = {}


def _selection_number(asked: tuple) -> int:
    number = _selection_numbers.get(asked)
    if number is None:
        if len(_selection_numbers) >= RENDERED_MAX:   # numbers start again: so do the
            _selection_numbers.clear()                # texts kept under the old ones
            _rendered.clear()
        number = _selection_numbers[asked] = len(_selection_numbers)
    return number


class PropertyView:
    """The properties of the resources at and below `top` (with `members`), dead
    ones and locks read from `store` at once."""

    def __init__(self, store: Store | None, values: dict, top: str, members: bool) -> None:
        self.values = values
        self.locks: list[Lock] = []
        self.dead: dict[str, list[tuple[str, str, str]]] = {}
        if store is not None:
            with store.snapshot():
                self.locks = store.locks_covering(top)
                if members:
                    self.locks += store.locks_below(top)
                found = store.properties_from(top, members)
            for resource, namespace, name, value in found:
                self.dead.setdefault(resource, []).append((namespace, name, value))

    def response(self, resource: Resource, selection: Selection) -> str:
        """One resource's `<D:response>`: what was asked for, by status; kept when
        no lock shows in it (its dead properties are part of the key)."""
        text = self._kept(resource.url, resource.found, selection)
        return self._render_and_keep(resource, selection) if text is None else text

    def member_response(self, url: str, path: str, st: os.stat_result,
                        selection: Selection) -> str:
        """`response` of a collection's member the walk has just stat'ed: a kept text
        is found without making the member's Resource."""
        if S_ISDIR(st.st_mode):
            url += "/"
        text = self._kept(url, st, selection)
        if text is None:
            return self._render_and_keep(Resource(url, path, st), selection)
        return text

    def _kept(self, url: str, st: os.stat_result, selection: Selection) -> str | None:
        """The text kept for this version of the resource, if any."""
        if self.locks and self._locked(url):
            return None
        kept = _rendered.get(self._key(url, st, selection))
        return kept[1] if kept is not None and kept[0] is self.values else None

    def _render_and_keep(self, resource: Resource, selection: Selection) -> str:
        """Render; keep the text unless a lock shows in it or the file may still change
        within the stat's clock tick (worker/settled.py)."""
        text = self._render(resource, selection)
        url, st = resource.url, resource.found
        if settled(st) and not self._locked(url):
            if len(_rendered) >= RENDERED_MAX:
                _rendered.clear()
            _rendered[self._key(url, st, selection)] = (self.values, text)
        return text

    def _locked(self, url: str) -> bool:
        """A lock shows in the resource's answer (lockdiscovery): never kept."""
        return any(lock.covers(url) for lock in self.locks)

    def _key(self, url: str, st: os.stat_result, selection: Selection) -> tuple:
        """What a kept `<D:response>` depends on (the settings aside): the URL, the
        file's inode, device and size (read by index, cheaper than by name), its
        change times, the selection and the dead properties."""
        key = (url, st[1], st[2], st[6], st.st_mtime_ns, st.st_ctime_ns, selection.key)
        dead = self.dead.get(url) if self.dead else None   # mostly none in the store
        return key + tuple(dead) if dead else key

    def _render(self, resource: Resource, selection: Selection) -> str:
        mode = selection.mode
        if mode == "propname":
            found = {200: self.names(resource)}
        elif mode == "allprop":
            found = {200: self.all(resource)}
        else:
            found = self.chosen(resource, selection.plan)
        return response_with_propstats(href(resource.url), found)

    def names(self, resource: Resource) -> list[str]:
        """propname: every property's name, empty."""
        dead = [(ns, name) for ns, name, _ in self.dead.get(resource.url, ())]
        return [property_xml(name) for name in [(DAV, n) for n in LIVE_PROPERTIES] + dead]

    def all(self, resource: Resource) -> list[str]:
        """allprop: every property with its value."""
        found = [show(self, resource) for show in _LIVE.values()]
        found += [property_xml((ns, name), value)
                  for ns, name, value in self.dead.get(resource.url, ())]
        return found

    def chosen(self, resource: Resource, plan: list["Wanted"]) -> dict[int, list[str]]:
        """prop: the named properties (`plan`, see wanted) with their values (200) and
        those the resource has not (404), each group in the order asked."""
        found: dict[int, list[str]] = {}
        dead = self.dead.get(resource.url)
        for name, live, empty in plan:
            if live is not None:
                found.setdefault(200, []).append(live(self, resource))
                continue
            prop = _dead_one(dead, name) if dead else None
            if prop is None:
                found.setdefault(404, []).append(empty)
            else:
                found.setdefault(200, []).append(prop)
        return found

    def lock_discovery(self, resource: Resource) -> str:
        return dav_element("lockdiscovery", "".join(
            active_lock(lock) for lock in self.locks if lock.covers(resource.url)))

    def content_type(self, resource: Resource) -> str:
        if resource.is_collection:
            return DIRECTORY_MIME
        kind = content_type_for(self.values, resource.path)
        return dav_element("getcontenttype", escape_text(kind))

    def etag(self, resource: Resource) -> str:
        return dav_element("getetag", stat_etag(resource.found, self.values))


def _dead_one(dead: list[tuple[str, str, str]], name: Name) -> str | None:
    for namespace, local, value in dead:
        if (namespace, local) == name:
            return property_xml(name, value)
    return None


def _creation_date(st: os.stat_result) -> str:
    return dav_element("creationdate", time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                     time.gmtime(st.st_ctime)))


def _display_name(url: str) -> str:
    """The last segment as text: a name that is not UTF-8 shows U+FFFD where its
    bytes are not (the document stays UTF-8; the href keeps the exact bytes)."""
    name = url.rstrip("/").rpartition("/")[2]
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return dav_element("displayname", escape_text(name))


# live property -> its element for (view, resource); the order of allprop answers
_LIVE: Final[dict[str, Callable[[PropertyView, Resource], str]]] = {
    "creationdate": lambda view, resource: _creation_date(resource.found),
    "displayname": lambda view, resource: _display_name(resource.url),
    "getcontentlength": lambda view, resource: dav_element(
        "getcontentlength", str(resource.found.st_size)),
    "getcontenttype": PropertyView.content_type,
    "getetag": PropertyView.etag,
    "getlastmodified": lambda view, resource: dav_element(
        "getlastmodified", last_modified(resource.found.st_mtime)),
    "resourcetype": lambda view, resource: COLLECTION_TYPE if resource.is_collection
    else FILE_TYPE,
    "supportedlock": lambda view, resource: SUPPORTED_LOCK,
    "lockdiscovery": PropertyView.lock_discovery,
}
LIVE_PROPERTIES: Final = tuple(_LIVE)

# a property a PROPFIND names: its name, how a live one is shown (None: a dead one),
# its empty element (what a 404 shows)
Wanted = tuple[Name, "Callable[[PropertyView, Resource], str] | None", str]


def wanted(names: tuple[Name, ...]) -> list[Wanted]:
    """The named properties of a PROPFIND, looked up once for all its resources."""
    return [(name, _LIVE[name[1]] if is_live(name) else None, property_xml(name))
            for name in names]
