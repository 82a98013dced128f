"""mod_webdav: a file share over WebDAV (RFC 4918), with lighttpd 1.4.69's keys.

`webdav.activate` turns a URL space into a share; `webdav.is-readonly` leaves only the
methods that change nothing; `webdav.sqlite-db-name` keeps dead properties and locks
(worker/webdav_store.py: lighttpd's tables); `webdav.log-xml` logs the XML of requests
and answers; `webdav.opts` enables `propfind-depth-infinity`,
`unsafe-propfind-follow-symlink` and the partial PUT (`Content-Range`) of
`partial-put-copy-modify` (a copy modified, then renamed over the file) or
`deprecated-unsafe-partial-put` (written in place).

The module takes the WebDAV methods in the physical phase, once mod_alias has mapped
the URL (lighttpd's mod_webdav_physical_handler), so no 404 or trailing-slash redirect
of the core's file checks comes first; GET, HEAD and POST stay with mod_staticfile.
Each method runs as a generator (`_Job`) that yields after each unit of file-system
work: `_drive` runs it for a slice of at most SLICE seconds, then holds the request
(WAIT) and resumes it on the next round of the loop, or when more of a request body
came.  So a COPY or DELETE of a big tree, a Depth: infinity PROPFIND or a large PUT
never stall the worker's other connections.

A PUT is written into a hidden temporary file in the target's directory as the body
arrives and renamed over the target once it is complete: an upload that fails or is
cut off leaves the old file as it was and the temporary file removed
(handle_request_reset closes the generator, whose cleanup runs).

What every method shares (its body, its Destination, the If header and the lock
checks) is worker/webdav_request.py; properties worker/webdav_props.py; the tables
worker/webdav_store.py; the XML worker/webdav_xml.py; tree walks worker/webdav_fs.py.

Paths: the request's own path is the core's cleaned one; a Destination is decoded and
cleaned the same way and must lie below the same URL prefix as the request (mapped to
the same document root or alias target), else 502; with server.follow-symlink off a
path through a symlink is refused (403), and walks never follow a symlink.
"""

from __future__ import annotations

import errno
import math
import os
import sqlite3
import time
from stat import S_ISDIR
from typing import TYPE_CHECKING, Any, Callable, Final, Generator

from shared.config.directives import Directive, DirectiveValueError, Type, to_bool

from ..module import BACKLOG_HIGH, ERROR, WAIT, HandlerResult, Module as BaseModule
from ..request import Request
from ..static import is_directory
from ..statcache import CACHE
from ..webdav_fs import (COPY_STEP, DIR_MODE, FILE_MODE, STEP, copy_contents, copy_file,
                         copy_link, copy_tree, lstat_or_none, members_of, remove,
                         split_path, write_replacement)
from ..webdav_props import (PropertyView, Resource, Selection, active_lock, href, is_live,
                            resource_at)
from ..webdav_request import (NEED_BODY, NEED_DRAIN, XML_TYPE, DavError, DavRequest,
                              depth_header, os_status)
from ..webdav_store import INFINITY, Lock, Store, new_lock_token
from ..webdav_xml import (DAV, MULTISTATUS_CLOSE, MULTISTATUS_OPEN, XML_HEAD, Element,
                          dav_element, error_body, property_xml, response_with_propstats)

if TYPE_CHECKING:
    from ..services import Services

OPTIONS: Final = frozenset({"propfind-depth-infinity", "unsafe-propfind-follow-symlink",
                            "deprecated-unsafe-partial-put", "partial-put-copy-modify"})


def _parse_opts(value: Any) -> frozenset[str]:
    enabled = set()
    for key, item in value or ():
        if key not in OPTIONS:
            raise DirectiveValueError(f"webdav.opts: unknown option {key!r} (known: "
                                      f"{', '.join(sorted(OPTIONS))})")
        if to_bool(item):
            enabled.add(key)
    return frozenset(enabled)


DIRECTIVES: Final = (
    Directive("webdav.activate", Type.BOOL, False),
    Directive("webdav.is-readonly", Type.BOOL, False),
    Directive("webdav.sqlite-db-name", Type.STRING, ""),
    Directive("webdav.log-xml", Type.BOOL, False),
    Directive("webdav.opts", Type.ARRAY_KVANY, frozenset(), convert=_parse_opts),
)

WRITE_METHODS: Final = frozenset({"PROPPATCH", "MKCOL", "PUT", "DELETE", "COPY", "MOVE", "LOCK",
                                  "UNLOCK"})
# RFC 4918 §8.4: the methods that read no body refuse one (415), as in lighttpd
BODYLESS_METHODS: Final = frozenset({"DELETE", "MOVE", "COPY", "MKCOL", "UNLOCK"})
CORE_ALLOW: Final = "OPTIONS, GET, HEAD, POST"
ALLOW: Final = "PROPFIND, DELETE, MKCOL, PUT, MOVE, COPY, PROPPATCH, LOCK, UNLOCK, " + CORE_ALLOW
ALLOW_WITHOUT_DB: Final = "PROPFIND, DELETE, MKCOL, PUT, MOVE, COPY, " + CORE_ALLOW
ALLOW_READONLY: Final = "PROPFIND, " + CORE_ALLOW
# what a PROPPATCH without webdav.sqlite-db-name (no dead properties) is told, as lighttpd
ALLOW_WITHOUT_PROPERTIES: Final = "GET, HEAD, PROPFIND, DELETE, MKCOL, PUT, MOVE, COPY"
SLICE: Final = 0.01               # seconds of file-system work per round of the loop
PROPFIND_BATCH: Final = 32        # resources of a Multi-Status rendered between two steps
DIRECTORY_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
DEFAULT_LOCK_TIMEOUT: Final = 600
MAX_LOCK_TIMEOUT: Final = 604800  # a week: "Infinite" and larger asks get this
PARTIAL_PUT: Final = frozenset({"deprecated-unsafe-partial-put", "partial-put-copy-modify"})
_STATE: Final = "webdav"

Job = Generator[str, None, int]


class _Job:
    """A method in progress: its generator and the timer that resumes it."""

    __slots__ = ("steps", "timer")

    def __init__(self, steps: Job) -> None:
        self.steps = steps
        self.timer: Any = None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.steps.close()


class Module(BaseModule):
    name = "webdav"
    directives = DIRECTIVES
    active_when = {"handle_uri_clean": "webdav.activate", "handle_physical": "webdav.activate"}
    reads_request_body = True

    def __init__(self, config: Any, services: "Services") -> None:
        super().__init__(config, services)
        self.services: "Services" = services
        self.stores: dict[str, Store] = {}
        self.last_purge = 0.0
        self.methods: dict[str, Callable[["_Dav"], Job | int]] = {
            "PROPFIND": _Dav.propfind, "PROPPATCH": _Dav.proppatch, "MKCOL": _Dav.mkcol,
            "PUT": _Dav.put, "DELETE": _Dav.delete, "COPY": _Dav.copy_or_move,
            "MOVE": _Dav.copy_or_move, "LOCK": _Dav.lock, "UNLOCK": _Dav.unlock}

    def allows_replay(self, request: Request) -> bool:
        """Files of a share that can be written change faster than the one-second
        staleness of kept answers allows: those are never replayed."""
        values = request.settings.values
        return not values["webdav.activate"] or values["webdav.is-readonly"]

    def store(self, values: dict) -> Store | None:
        name = values["webdav.sqlite-db-name"]
        if not name:
            return None
        store = self.stores.get(name)
        if store is None:
            store = self.stores[name] = Store(name)
        return store

    # ---------------------------------------------------------------- hooks
    def handle_uri_clean(self, request: Request) -> HandlerResult:
        """`OPTIONS *` names no file, so no physical phase: the server's WebDAV
        classes are told here (lighttpd tells them for every OPTIONS in this phase)."""
        if request.uri_path == "*" and request.method == "OPTIONS" and \
                request.settings.values["webdav.activate"]:
            return _options(request)
        return None

    def handle_physical(self, request: Request) -> HandlerResult:
        values = request.settings.values
        method = request.method
        if not values["webdav.activate"] or method not in self.methods and \
                method != "OPTIONS":
            return None
        response = request.response
        if method == "OPTIONS":
            return _options(request)
        if values["webdav.is-readonly"] and method in WRITE_METHODS:
            return 403
        if method in BODYLESS_METHODS and _has_body(request):
            return 415                   # RFC 4918 §8.4: a body it would ignore
        if not values["server.follow-symlink"] and \
                CACHE.contains_symlink(request.physical_path):
            return 403
        if request.waits_for_body():
            return WAIT
        return self._guarded(request, lambda: self._begin(request))

    def handle_subrequest(self, request: Request) -> HandlerResult:
        job = request.plugin_ctx.get(_STATE)
        if job is None:                  # it waited for its whole body
            if request.waits_for_body():
                return WAIT
            return self._guarded(request, lambda: self._begin(request))
        job.timer = None
        return self._guarded(request, lambda: self._drive(request, job))

    def handle_request_reset(self, request: Request) -> None:
        job = request.plugin_ctx.pop(_STATE, None)
        if job is not None:
            job.close()

    def handle_trigger(self, now: float) -> None:
        if now - self.last_purge < 60 or not self.stores:
            return
        self.last_purge = now
        for name, store in self.stores.items():
            try:
                store.purge_expired()
            except sqlite3.Error as err:
                self.services.log_error("mod_webdav.c", f"{name}: purging locks: {err}")

    def _begin(self, request: Request) -> HandlerResult:
        """Run the method: at once when it is a plain one, in slices when it is a
        generator (_Job)."""
        dav = _Dav(request, self.store(request.settings.values), self.log_xml)
        started = self.methods[request.method](dav)
        if isinstance(started, int):
            return started
        job = request.plugin_ctx[_STATE] = _Job(started)
        return self._drive(request, job)

    def _drive(self, request: Request, job: _Job) -> HandlerResult:
        """Run the job for one slice; WAIT while it is not done."""
        deadline = time.monotonic() + SLICE
        try:
            while True:
                reason = next(job.steps)
                if reason in (NEED_BODY, NEED_DRAIN):
                    return WAIT          # the core wakes us when more came, or went
                if time.monotonic() > deadline:
                    job.timer = self.services.call_later(0, request.wake)
                    return WAIT
        except StopIteration as done:
            return done.value

    def _guarded(self, request: Request, step: Callable[[], HandlerResult]) -> HandlerResult:
        """`step()`, with the exceptions a method ends with turned into statuses."""
        try:
            return step()
        except (DavError, OSError, sqlite3.Error) as err:
            if request.response.started:     # a streamed Multi-Status is cut: the
                self.services.log_error(     # connection closes on it
                    "mod_webdav.c", f"{request.target}: answer cut: {err!r}")
                return ERROR
            return self._failed(request, err)

    def _failed(self, request: Request, err: Exception) -> int:
        """The status of a method that raised `err`, alone (what it had written of
        its answer dropped), with an error body for a DavError that names a
        precondition."""
        _discard_answer(request)
        if isinstance(err, DavError):
            if err.condition:
                request.response.add_header("Content-Type", XML_TYPE)
                request.response.write(error_body(err.condition))
            return err.status
        if isinstance(err, OSError):
            status = os_status(err)
            if status >= 500:
                self.services.log_error("mod_webdav.c", f"{request.method} "
                                        f"{request.target}: {err}")
            return status
        self.services.log_error("mod_webdav.c", f"sqlite: {err} ({request.target})")
        return 500

    def log_xml(self, request: Request, what: str, data: bytes) -> None:
        if request.settings.values["webdav.log-xml"]:
            self.services.log_error("mod_webdav.c", f"XML-{what}-body: "
                                    f"{data.decode('utf-8', 'replace')}")


def _has_body(request: Request) -> bool:
    """Whether the request brings a body (a chunked one that turns out empty does
    not)."""
    body = request.body
    return body is not None and (body.size > 0 or not body.complete)


def _options(request: Request) -> int:
    """The DAV compliance classes (RFC 4918 §18: 2 with locks, which need the
    database) and the methods, as lighttpd says them."""
    values = request.settings.values
    with_db = bool(values["webdav.sqlite-db-name"])
    response = request.response
    response.add_header("DAV", "1,2,3" if with_db else "1,3")
    response.add_header("MS-Author-Via", "DAV")    # MS Office: DAV, not FrontPage
    if values["webdav.is-readonly"]:
        response.add_header("Allow", ALLOW_READONLY)
    else:
        response.add_header("Allow", ALLOW if with_db else ALLOW_WITHOUT_DB)
    return 200


def _discard_answer(request: Request) -> None:
    """Drop what a method that failed half-way had written of its answer (a part
    of a Multi-Status body): its error status goes out alone."""
    request.response.reset_body()
    request.response.remove_header("Content-Type")


class _Dav(DavRequest):
    """One WebDAV request and its methods."""

    # ------------------------------------------------------------ PROPFIND
    def propfind(self) -> Job:
        opts = self.values["webdav.opts"]
        depth = depth_header(self.request, "infinity", ("0", "1", "infinity"))
        if depth == "infinity" and "propfind-depth-infinity" not in opts:
            raise DavError(403, "propfind-finite-depth")
        body = yield from self.read_xml("propfind", required=False)
        self.check_if()
        selection = _selection(body)
        self.lstat_target()
        if not self.target.exists:
            return 404                   # a dangling symlink
        view = PropertyView(self.store, self.values, self.target.url, depth != "0")
        response = self.request.response
        response.status = 207
        response.add_header("Content-Type", XML_TYPE)
        if depth != "0" and not self.values["webdav.log-xml"]:
            response.stream()            # a big tree's answer is not kept in memory
        batch = [MULTISTATUS_OPEN]
        follow = "unsafe-propfind-follow-symlink" in opts
        for text in self._responses(view, selection, depth, follow):
            batch.append(text)
            if len(batch) >= PROPFIND_BATCH:
                response.write("".join(batch).encode("utf-8", "surrogateescape"))
                batch.clear()
                yield STEP
                if self.request.backlog() >= BACKLOG_HIGH:
                    response.wants_drain = True
                    yield NEED_DRAIN
        batch.append(MULTISTATUS_CLOSE)
        response.write("".join(batch).encode("utf-8", "surrogateescape"))
        if self.values["webdav.log-xml"]:
            self.log_xml(self.request, "response", b"".join(
                part for part in response.body if isinstance(part, bytes)))
        return 207

    def _responses(self, view: PropertyView, selection: Selection, depth: str,
                   follow: bool) -> Generator[str, None, None]:
        """The `<D:response>` of the target and, by depth, of its members (symlinks
        only with `follow` and server.follow-symlink; never into a directory twice
        through one)."""
        yield view.response(self.target, selection)
        if depth == "0" or not self.target.is_collection:
            return
        follow = follow and self.values["server.follow-symlink"]
        pending = [self.target]
        while pending:
            collection = pending.pop()
            try:
                entries = members_of(collection.path, collection.found)
                dir_fd = os.open(collection.path, DIRECTORY_FLAGS)
            except OSError:
                continue
            try:
                yield from self._member_responses(view, selection, collection, entries,
                                                  dir_fd, follow, pending,
                                                  depth == "infinity")
            finally:
                os.close(dir_fd)

    @staticmethod
    def _member_responses(view: PropertyView, selection: Selection, collection: Resource,
                          entries: list[tuple[str, bool]], dir_fd: int, follow: bool,
                          pending: list[Resource], deeper: bool
                          ) -> Generator[str, None, None]:
        """The `<D:response>`s of one collection's members, each stat'ed relative to
        its open directory `dir_fd` (no path walk per member); its subcollections go
        to `pending` when `deeper`."""
        directory = collection.path.rstrip("/") + "/"
        url = collection.url
        for name, is_link in entries:
            if is_link and not follow:
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd)
            except OSError:
                continue                     # gone or unreadable: not listed
            member_url, member_path = url + name, directory + name
            yield view.member_response(member_url, member_path, st, selection)
            if deeper and not is_link and S_ISDIR(st.st_mode):
                pending.append(Resource(member_url, member_path, st))

    # ----------------------------------------------------------- PROPPATCH
    def proppatch(self) -> Job:
        if self.store is None:          # nowhere to keep properties: 405 before the body
            self.request.response.set_header("Allow", ALLOW_WITHOUT_PROPERTIES)
            return 405
        update = yield from self.read_xml("propertyupdate", required=True)
        assert update is not None
        self.check_if()
        self.lstat_target()
        if not self.target.exists:
            return 404                   # a dangling symlink
        self.check_unlocked(self.target)
        results = self._apply_changes(_property_changes(update))
        by_status: dict[int, list[str]] = {}
        for name, status in results.items():
            by_status.setdefault(status, []).append(property_xml(name))
        return self.answer_xml(207, MULTISTATUS_OPEN + response_with_propstats(
            href(self.target.url), by_status) + MULTISTATUS_CLOSE)

    def _apply_changes(self, changes: list[tuple[str, tuple[str, str], str | None]]
                       ) -> dict[tuple[str, str], int]:
        """All the changes, in order, or none: live properties cannot be changed
        (403), and then every other one fails too (424)."""
        assert self.store is not None
        refused = {name for _, name, _ in changes if is_live(name)}
        if refused:
            return {name: 403 if name in refused else 424 for _, name, _ in changes}
        url = self.target.url
        with self.store.transaction():
            for action, (namespace, local), value in changes:
                if action == "set":
                    self.store.set_property(url, namespace, local, value or "")
                else:
                    self.store.remove_property(url, namespace, local)
        return {name: 200 for _, name, _ in changes}

    # --------------------------------------------------------------- MKCOL
    def mkcol(self) -> int:
        self.check_if()
        target = self.target
        if target.exists:
            return 405
        self.check_unlocked(target, parent=True)
        try:
            os.mkdir(target.path, DIR_MODE)
        except (FileNotFoundError, NotADirectoryError):
            return 409                   # no collection to make it in
        CACHE.invalidate(target.path)
        return 201

    # ----------------------------------------------------------------- PUT
    def put(self) -> Job:
        """The checks in lighttpd's order (mod_webdav_put_prep): the URL, a
        Content-Range, the parent collection, then the conditions and locks."""
        target = self.target
        if target.is_collection:
            return 405
        if self.request.uri_path.endswith("/"):
            return 400                   # a file's URL has no trailing slash
        if "content-range" in self.request.headers:
            if not PARTIAL_PUT & self.values["webdav.opts"]:
                return 400               # RFC 9110 §14.5: never a whole-file PUT
            self.check_if()
            self.check_unlocked(target)
            return (yield from self._put_range(target))
        parent, name = split_path(target.path)
        try:
            dir_fd = self.open_directory(parent)
        except OSError as err:
            return 409 if err.errno in (errno.ENOENT, errno.ENOTDIR) else os_status(err)
        try:
            self.check_if()
            self.check_unlocked(target, parent=not target.exists)
            st = yield from write_replacement(dir_fd, name,
                                              lambda fd: self._write_body(fd, 0))
        finally:
            os.close(dir_fd)
        CACHE.invalidate(target.path)
        self.request.response.add_header("ETag", self.etag(st))
        return 204 if target.exists else 201

    def _write_body(self, fd: int, offset: int) -> Generator[str, None, None]:
        """Write the request body into `fd` from `offset` as it arrives; a body
        already whole in its spool file is copied by the kernel (copy_file_range)."""
        body = self.request.body
        if body is None:
            return
        if body.complete and body.file is not None and body.consumed == 0:
            os.lseek(fd, offset, os.SEEK_SET)
            yield from copy_contents(body.open().fileno(), fd)
            return
        while True:
            data = body.read_chunk(COPY_STEP)
            if data:
                view = memoryview(data)
                while view:
                    written = os.pwrite(fd, view, offset)
                    view, offset = view[written:], offset + written
                yield STEP
            elif body.complete:
                return
            else:
                yield NEED_BODY

    def _put_range(self, target: Resource) -> Job:
        """lighttpd's partial PUT: the body written at the offset `Content-Range:
        bytes N-...` names, into a copy of the existing file renamed over it
        (partial-put-copy-modify), or in place (deprecated-unsafe-partial-put, and
        with both an append to a file with one link)."""
        spec = self.request.headers["content-range"]
        first, dash, _ = spec[6:].strip(" \t").partition("-")
        if not spec.startswith("bytes ") or not first.isdecimal() or not dash:
            return 501
        offset = int(first)
        if not target.exists:
            return 404
        opts = self.values["webdav.opts"]
        st = target.found
        if "deprecated-unsafe-partial-put" in opts and (
                "partial-put-copy-modify" not in opts
                or (st.st_size == offset and st.st_nlink == 1)):
            fd = os.open(target.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                yield from self._write_body(fd, offset)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        else:
            st = yield from self._copy_modify(target, offset)
        CACHE.invalidate(target.path)
        self.request.response.add_header("ETag", self.etag(st))
        return 204

    def _copy_modify(self, target: Resource, offset: int) -> Generator[str, None,
                                                                         os.stat_result]:
        parent, name = split_path(target.path)
        dir_fd = self.open_directory(parent)
        try:
            src = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                def fill(fd: int) -> Generator[str, None, None]:
                    yield from copy_contents(src, fd)
                    yield from self._write_body(fd, offset)
                return (yield from write_replacement(dir_fd, name, fill))
            finally:
                os.close(src)
        finally:
            os.close(dir_fd)

    # -------------------------------------------------------------- DELETE
    def delete(self) -> Job:
        # a fragment, which no client should send, may hide what was meant (litmus
        # delete_fragment): refused, as lighttpd refuses it
        if "#" in self.request.target_orig:
            return 403
        st = self.lstat_target()
        self.check_if()
        target = self.target
        if self.is_root(target):
            return 403
        if is_directory(st):
            depth_header(self.request, "infinity", ("infinity",))
        self.check_unlocked(target, members=True, parent=True)
        failed = yield from remove(target.path, st)
        CACHE.invalidate_tree(target.path)
        if self.store is not None:
            if failed:
                self.store.forget(target.url, ("locks",))
            else:
                self.store.forget(target.url)
        return self.members_failed(failed, target) or 204

    # --------------------------------------------------------- COPY / MOVE
    def copy_or_move(self) -> Job:
        """The checks in lighttpd's order (mod_webdav_copymove_b), then the copy or
        move.  Where lighttpd merges a collection into an existing one, the
        destination is replaced, as RFC 4918 §9.8.4 and §9.9.3 ask; a collection
        named without its slash is copied as named (lighttpd answers 308, which
        clients such as webdav4 do not follow)."""
        move = self.request.method == "MOVE"
        overwrite = self.request.headers.get("overwrite", "T")
        if overwrite not in ("T", "t", "F", "f"):
            return 400
        replace = overwrite in ("T", "t")
        destination = self.destination()
        source = self.target
        named = self.request.uri_path             # as the URL names it, slash or not
        if destination.url.startswith(named) and (
                named.endswith("/") or destination.url[len(named):len(named) + 1] in ("", "/")):
            return 403                   # onto itself or into itself
        st = self.lstat_target()
        self.check_if()
        into = False
        if is_directory(st):
            if not destination.url.endswith("/"):
                destination.url += "/"
            depth = depth_header(self.request, "infinity", ("0", "1", "infinity"))
            if depth == "1" or (move and depth == "0"):
                return 400
            members = depth == "infinity"
        else:
            members = True
            if destination.is_collection:         # as lighttpd: `cp file dir`
                destination = self._member_named_as(source, destination)
                into = True
            elif destination.url.endswith("/"):
                return 409                        # a file cannot become a collection
        if self.is_root(destination):
            return 403
        parent = resource_at(destination.parent_url, split_path(destination.path)[0])
        if not parent.is_collection:
            return 409
        existed = lstat_or_none(destination.path)
        if existed is not None and not replace:
            return 412
        if into and destination.path == source.path:
            return 204                   # the file is where it is asked to go
        if into and existed is not None and is_directory(existed):
            return 409
        if move:
            self.check_unlocked(source, members=True, parent=True)
        self.check_unlocked(destination, members=True, parent=existed is None)
        if existed is not None:
            if is_directory(st) or is_directory(existed):   # a file replaces a file
                failed = yield from remove(destination.path, existed)     # at once
                if failed:
                    return self.members_failed(failed, destination)
            if self.store is not None:        # its locks stay: they lock the URL
                self.store.forget(destination.url, ("properties",))
        status = yield from (self._move(source, destination) if move
                             else self._copy(source, destination, members))
        CACHE.invalidate_tree(source.path)
        CACHE.invalidate_tree(destination.path)
        return status or (204 if existed is not None or into else 201)

    def _member_named_as(self, source: Resource, collection: Resource) -> Resource:
        """The member of `collection` with the name of the file `source`."""
        member = self.resource(collection.url + source.url.rpartition("/")[2])
        if member is None:
            raise DavError(502)
        return member

    def _move(self, source: Resource, destination: Resource) -> Job:
        try:
            os.rename(source.path, destination.path)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            status = yield from self._copy(source, destination, True)
            if status:
                return status
            st = os.lstat(source.path)
            failed = yield from remove(source.path, st)
            if failed:
                return self.members_failed(failed, source)
        if self.store is not None:
            self.store.move_properties(source.url, destination.url)
            self.store.forget(source.url, ("locks",))
        return 0

    def _copy(self, source: Resource, destination: Resource, members: bool) -> Job:
        st = os.lstat(source.path)
        if is_directory(st):
            failed = yield from copy_tree(source.path, destination.path, members)
        elif os.path.islink(source.path):
            copy_link(source.path, destination.path)
            failed = []
        else:
            yield from copy_file(source.path, destination.path)
            failed = []
        if self.store is not None:
            self.store.copy_properties(source.url, destination.url, members)
        return self.members_failed(failed, destination)

    # ---------------------------------------------------------- LOCK / UNLOCK
    def lock(self) -> Job:
        info = yield from self.read_xml("lockinfo", required=False)
        self.check_if()
        if self.store is None:
            return 405
        if info is None:
            if "if" not in self.request.headers:
                return 400               # a refresh names its lock in the If header
            return self._refresh()
        depth = depth_header(self.request, "infinity", ("0", "infinity"))
        scope, owner_xml = _lock_request(info)
        target = self.target
        created = not target.exists
        if created and self.request.uri_path.endswith("/"):
            return 400                   # an empty file is made: no collection URL
        lock = Lock(new_lock_token(), target.url, scope, "write", self.user, owner_xml,
                    INFINITY if depth == "infinity" else 0, self._expiry())
        with self.store.transaction():   # no other worker locks it in between
            self._check_conflicts(target.url, scope, depth == "infinity")
            if created:
                self.check_unlocked(target, parent=True)
                self._create_empty(target)
            self.store.add_lock(lock)
        response = self.request.response
        response.add_header("Lock-Token", f"<{lock.token}>")
        if not target.is_collection:                       # as lighttpd
            response.add_header("ETag", self.etag(os.stat(target.path)))
        return self.answer_xml(201 if created else 200, _lock_answer([lock]))

    def _create_empty(self, target: Resource) -> None:
        """LOCK of an unmapped URL: an empty file there (RFC 4918 §7.3)."""
        parent, name = split_path(target.path)
        try:
            dir_fd = self.open_directory(parent)
        except (FileNotFoundError, NotADirectoryError):
            raise DavError(409) from None        # no collection to make it in
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                             | os.O_NOFOLLOW, FILE_MODE, dir_fd=dir_fd))
        finally:
            os.close(dir_fd)
        CACHE.invalidate(target.path)

    def _check_conflicts(self, url: str, scope: str, deep: bool) -> None:
        assert self.store is not None
        locks = self.store.locks_covering(url)
        if deep:
            locks += self.store.locks_below(url)
        if any(lock.scope == "exclusive" or scope == "exclusive" for lock in locks):
            raise DavError(423, "no-conflicting-lock")

    def _refresh(self) -> int:
        assert self.store is not None
        locks = [lock for lock in self.store.locks_covering(self.target.url)
                 if lock.token in self.tokens and lock.owner in ("", self.user)]
        if not locks:
            raise DavError(412, "lock-token-submitted")
        expires = self._expiry()
        for lock in locks:
            self.store.refresh_lock(lock.token, expires)
            lock.expires = expires
        return self.answer_xml(200, _lock_answer(locks))

    def _expiry(self) -> int:
        """When a lock taken now expires, by the Timeout header's first choice: never
        sooner than asked (a lock holds while its expiry second is ahead, so one taken
        at 100.9 for a second lasts until 102, not until 101)."""
        seconds = DEFAULT_LOCK_TIMEOUT
        header = self.request.headers.get("timeout", "")
        choice = header.split(",")[0].strip(" \t").lower()
        if choice == "infinite":
            seconds = MAX_LOCK_TIMEOUT
        elif choice.startswith("second-") and choice[7:].isdecimal():
            seconds = min(int(choice[7:]), MAX_LOCK_TIMEOUT)
        return math.ceil(time.time()) + seconds

    def unlock(self) -> int:
        header = self.request.headers.get("lock-token", "").strip(" \t")
        if not (header.startswith("<") and header.endswith(">")):
            return 400
        self.check_if()
        if self.store is None:
            return 405
        lock = self.store.lock(header[1:-1])
        if lock is None or not lock.covers(self.target.url):
            raise DavError(409, "lock-token-matches-request-uri")
        if lock.owner not in ("", self.user):
            return 403
        self.store.remove_lock(lock.token)
        return 204


def _selection(body: Element | None) -> Selection:
    """What a PROPFIND asks for."""
    if body is None:
        return Selection("allprop")
    for child in body.children:
        if child.name == (DAV, "propname"):
            return Selection("propname")
        if child.name == (DAV, "prop"):
            return Selection("prop", tuple(prop.name for prop in child.children))
        if child.name == (DAV, "allprop"):
            return Selection("allprop")
    raise DavError(400)


def _property_changes(update: Element) -> list[tuple[str, tuple[str, str], str | None]]:
    """The set / remove instructions of a PROPPATCH, in order: (action, name, value)."""
    changes: list[tuple[str, tuple[str, str], str | None]] = []
    for action in update.children:
        if action.name not in ((DAV, "set"), (DAV, "remove")):
            raise DavError(400)
        prop = action.child((DAV, "prop"))
        if prop is None:
            raise DavError(400)
        for item in prop.children:
            value = item.inner_xml() if action.name[1] == "set" else None
            changes.append((action.name[1], item.name, value))
    if not changes:
        raise DavError(400)
    return changes


def _lock_request(info: Element) -> tuple[str, str]:
    """(scope, owner XML) of a lockinfo body; 400 when it asks for what is not
    supported."""
    scope_element = info.child((DAV, "lockscope"))
    kind = info.child((DAV, "locktype"))
    if scope_element is None or kind is None or kind.child((DAV, "write")) is None:
        raise DavError(400)
    scopes = [child.name for child in scope_element.children]
    if scopes not in ([(DAV, "exclusive")], [(DAV, "shared")]):
        raise DavError(400)
    owner = info.child((DAV, "owner"))
    return scopes[0][1], owner.inner_xml() if owner is not None else ""


def _lock_answer(locks: list[Lock]) -> str:
    discovery = "".join(active_lock(lock) for lock in locks)
    return (XML_HEAD + '<D:prop xmlns:D="DAV:">'
            + dav_element("lockdiscovery", discovery) + "</D:prop>\n")
