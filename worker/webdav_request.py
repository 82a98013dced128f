"""One WebDAV request as mod_webdav's methods see it: its resource, its XML body,
the Destination it names, and the checks every method makes before it changes
anything: the If header (RFC 4918 §10.4) with the conditional headers of RFC 9110,
and the locks that cover what it would change (§7).

A method ends early by raising DavError with the status (and the precondition an
RFC 4918 §16 error body names); a method that must wait for more of its request
body yields NEED_BODY.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import Callable, Final, Generator
from urllib.parse import urlsplit

from .http import header_characters
from .request import Request
from .urlnorm import clean_path, decoded_utf8, simplify_path
from .static import stat_etag, check_preconditions, errno_status, open_without_symlinks
from .statcache import CACHE
from .webdav_if import IfHeaderError, evaluate, parse_if, submitted_tokens
from .webdav_props import Resource, href, resource_at
from .webdav_store import Lock, Store
from .webdav_xml import (DAV, MULTISTATUS_CLOSE, MULTISTATUS_OPEN, Element, XMLError, parse,
                         response_with_status)

XML_TYPE: Final = "application/xml;charset=utf-8"
MAX_XML_BODY: Final = 1 << 20     # bytes of XML a request may send
NEED_BODY: Final = "body"         # yielded by a method: wait until more of the body came
NEED_DRAIN: Final = "drain"       # yielded: wait until the client took what was written
PATH_MAX: Final = 4096            # a Destination path this long is refused (403)


class DavError(Exception):
    """Ends a method with `status` (and an RFC 4918 error body naming `condition`)."""

    def __init__(self, status: int, condition: str = "") -> None:
        super().__init__(status, condition)
        self.status = status
        self.condition = condition


def depth_header(request: Request, default: str, allowed: tuple[str, ...]) -> str:
    """The Depth header (`default` without one); 400 unless one of `allowed`."""
    depth = (request.headers.get("depth") or default).strip(" \t").lower()
    if depth not in allowed:
        raise DavError(400)
    return depth


def os_status(err: OSError) -> int:
    """The status of a failed file system operation of a WebDAV method."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507
    if err.errno == errno.EEXIST:
        return 405
    if err.errno in (errno.EXDEV, errno.ENOTEMPTY):
        return 409
    return errno_status(err)


class DavRequest:
    """A WebDAV request: what its methods share."""

    def __init__(self, request: Request, store: Store | None,
                 log_xml: Callable[[Request, str, bytes], None]) -> None:
        self.request = request
        self.values = request.settings.values
        self.store = store
        self.log_xml = log_xml
        # the URL prefix that maps to physical_basedir (the docroot or an alias target)
        rel = request.physical_rel
        uri = request.uri_path
        if request.physical_basedir.endswith("/") and not rel.startswith("/"):
            rel = "/" + rel
        self.url_prefix = uri[:len(uri) - len(rel)] if uri.endswith(rel) else None
        self.target = resource_at(uri, request.physical_path)
        self.tokens: set[str] = set()
        self.user = (request.env or {}).get("REMOTE_USER", "")

    # ------------------------------------------------------------ helpers
    def answer_xml(self, status: int, text: str) -> int:
        data = text.encode("utf-8", "surrogateescape")
        response = self.request.response
        response.add_header("Content-Type", XML_TYPE)
        response.write(data)
        self.log_xml(self.request, "response", data)
        return status

    def read_body(self) -> Generator[str, None, bytes]:
        """The whole request body (b"" without one), at most MAX_XML_BODY bytes."""
        body = self.request.body
        if body is None:
            return b""
        while not body.complete:
            if body.size > MAX_XML_BODY:
                raise DavError(413)
            yield NEED_BODY
        if body.size > MAX_XML_BODY:
            raise DavError(413)
        data = body.read()
        return data

    def read_xml(self, root: str, required: bool) -> Generator[str, None, Element | None]:
        """The request's XML body, whose root must be DAV:`root`: None when there
        is none and none is required; a malformed one is 400."""
        data = yield from self.read_body()
        if not data.strip():
            if required:
                raise DavError(400)
            return None
        self.log_xml(self.request, "request", data)
        try:
            element = parse(data)
        except XMLError:
            raise DavError(400) from None
        if element.name != (DAV, root):
            raise DavError(400)
        return element

    def resource(self, url: str) -> Resource | None:
        """The resource at a URL path of this share, or None when the path lies
        outside the URL prefix this request's docroot serves."""
        prefix = self.url_prefix
        if prefix is None or not url.startswith(prefix):
            return None
        rel = url[len(prefix):]
        if rel and not rel.startswith("/"):
            return None                  # /dav2 is not below /dav
        basedir = self.request.physical_basedir
        if basedir.endswith("/"):
            rel = rel.lstrip("/")
        path = basedir + rel
        if not self.values["server.follow-symlink"] and CACHE.contains_symlink(path):
            raise DavError(403)
        return resource_at(url, path)

    def lstat_target(self) -> os.stat_result:
        """The request's resource lstat'ed at its path as the URL names it, the first
        check of DELETE, COPY and MOVE in lighttpd: 404 when nothing is there, 403
        when the path cannot name anything (a file's name with a trailing slash)."""
        try:
            return os.lstat(self.request.physical_path)
        except FileNotFoundError:
            raise DavError(404) from None
        except OSError:
            raise DavError(403) from None

    def is_root(self, resource: Resource) -> bool:
        """Whether `resource` is the share's root directory itself (the document
        root or alias target), which no method deletes or replaces."""
        return resource.path == (self.request.physical_basedir.rstrip("/") or "/")

    def open_directory(self, path: str) -> int:
        """An O_PATH fd of the directory `path`, opened through no symlink when
        server.follow-symlink is off (the earlier check may be a second old)."""
        flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
        if self.values["server.follow-symlink"]:
            return os.open(path, flags)
        return open_without_symlinks(path, flags)

    def etag(self, st: os.stat_result | None) -> str:
        return stat_etag(st, self.values) if st is not None else ""

    # -------------------------------------------------------- If and locks
    def check_if(self) -> None:
        """Evaluate the If header (412 when false) and note the tokens it submits;
        and the conditions of RFC 9110 §13 (If-Match, If-None-Match,
        If-Unmodified-Since: 412), which lighttpd checks for PUT, COPY and MOVE."""
        target = self.target
        if target.st is not None:
            status = check_preconditions(self.request, self.etag(target.st),
                                         target.st.st_mtime)
            if status:
                raise DavError(status)
        elif "if-match" in self.request.headers:
            raise DavError(412)          # no current representation matches
        header = self.request.headers.get("if")
        if header is None:
            return
        try:
            groups = parse_if(header)
        except IfHeaderError:
            raise DavError(400) from None
        self.tokens = submitted_tokens(groups)
        if not evaluate(groups, functools.lru_cache(maxsize=None)(self.state_of)):
            raise DavError(412)

    def state_of(self, tag: str | None) -> tuple[set[str], str]:
        """(tokens of the locks covering it, its ETag) of the request's resource or
        of the one a tagged list names (asked once per resource a header names,
        however many lists name it)."""
        resource: Resource | None = self.target
        if tag is not None:
            resource = self.resource(clean_path(urlsplit(tag).path or "/"))
        if resource is None:
            return set(), ""
        tokens = set()
        if self.store is not None:
            tokens = {lock.token for lock in self.store.locks_covering(resource.url)}
        return tokens, self.etag(resource.st)

    def check_unlocked(self, resource: Resource, members: bool = False,
                       parent: bool = False) -> None:
        """423 unless each lock on `resource` (on its members too with `members`; on
        its parent collection's membership with `parent`) had its token submitted
        by its owner."""
        if self.store is None:
            return
        locks = self.store.locks_covering(resource.url)
        if members:
            locks += self.store.locks_below(resource.url)
        if parent:
            parent_url = resource.parent_url
            locks += [lock for lock in self.store.locks_covering(parent_url)
                      if lock.root == parent_url]
        if locks and not self._unlocks(locks):
            raise DavError(423, "lock-token-submitted")

    def _unlocks(self, locks: list[Lock]) -> bool:
        mine = {lock.token for lock in locks
                if lock.token in self.tokens and lock.owner in ("", self.user)}
        shared = [lock for lock in locks if lock.scope == "shared"]
        if shared and not any(lock.token in mine for lock in shared):
            return False
        return all(lock.token in mine for lock in locks if lock.scope != "shared")

    def members_failed(self, failed: list[tuple[str, OSError]], top: Resource) -> int:
        """A 207 naming the members that failed, or 0 when none did."""
        if not failed:
            return 0
        parts = [MULTISTATUS_OPEN]
        for path, err in failed:
            url = top.url.rstrip("/") + path[len(top.path):]
            parts.append(response_with_status(href(url), os_status(err)))
        parts.append(MULTISTATUS_CLOSE)
        return self.answer_xml(207, "".join(parts))

    def destination(self) -> Resource:
        """The Destination header's resource, read as lighttpd's mod_webdav reads it: a
        path, or the request's scheme, "://", the request's authority (a login before
        it skipped) and a path (400 for another form, 502 for another authority); the
        path without its query (a fragment stays in it), decoded (400 when that is not
        UTF-8), simplified; 502 for a path outside this share's URL space."""
        header = self.request.headers.get("destination")
        if not header:
            raise DavError(400)
        path = header_characters(header)          # raw UTF-8 as it came
        if not path.startswith("/"):
            prefix = self.request.scheme + "://"
            slash = path.find("/", len(prefix))
            if not path.startswith(prefix) or slash < 0:
                raise DavError(400)
            authority, host = path[len(prefix):slash], self.request.host
            if authority != host and authority.partition("@")[2] != host:
                raise DavError(502)
            path = path[slash:]
        path = path.partition("?")[0]
        if len(path) >= PATH_MAX:
            raise DavError(403)
        decoded = decoded_utf8(path)               # a control character is "_"
        if decoded is None:
            raise DavError(400)
        resource = self.resource(simplify_path(decoded))
        if resource is None:
            raise DavError(502)
        return resource
