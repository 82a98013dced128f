"""Directives of the server core (what lighttpd handles in server.c / configfile.c).

Module directives live in each module's own file; these are the ones every server has.
Defaults are lighttpd 1.4.69's.
"""

from __future__ import annotations

import os
from typing import Callable

from . import parseopts, ratelimit
from .directives import Directive, DirectiveValueError, Scope, Type

S, C, K = Scope.SERVER, Scope.CONNECTION, Scope.SOCKET


def _absolute_or_empty(path: str) -> str:
    if path and not path.startswith("/"):
        raise DirectiveValueError(f'"{path}" must be an absolute path')
    return path


def _blank_tag_emptied(tag: str) -> str:
    """A server.tag of only white space is empty, so no Server field goes out (an
    empty field is never sent), as lighttpd 1.4.69 empties such a tag."""
    return "" if not tag.strip(" \t\r\n") else tag


# server.network-backend: lighttpd's names, each meaning sendfile (files handed to the
# kernel) or a copy (files read, then written as memory is)
NETWORK_BACKENDS = {"sendfile": "sendfile", "linux-sendfile": "sendfile",
                    "freebsd-sendfile": "sendfile", "solaris-sendfilev": "sendfile",
                    "writev": "copy", "write": "copy"}


def _network_backend(name: str) -> str:
    """"sendfile" or "copy"; an empty value is lighttpd's default, sendfile."""
    if not name:
        return "sendfile"
    try:
        return NETWORK_BACKENDS[name]
    except KeyError:
        raise DirectiveValueError(f"unknown value: {name} (one of "
                                  f"{', '.join(NETWORK_BACKENDS)})") from None


# server.event-handler: the names lighttpd 1.4.69 takes on Linux ("libev" and "select"
# stand for others there); the workers' loop is epoll whatever the name
EPOLL_NAMES = ("linux-sysepoll", "epoll")
EVENT_HANDLERS = frozenset({*EPOLL_NAMES, "poll", "select", "libev"})


def event_handler_in_use(configured: str) -> str:
    """The event handler the workers wait with: epoll, under the config's name for it
    if it gave one."""
    return configured if configured in EPOLL_NAMES else "linux-sysepoll"


def _event_handler(name: str) -> str:
    if name and name not in EVENT_HANDLERS:
        raise DirectiveValueError(f"the selected event-handler in unknown or not "
                                  f"supported: {name}")
    return name


def _epoll_only(name: str) -> str | None:
    if name in ("poll", "select"):
        return (f'server.event-handler "{name}": the workers wait with epoll, the only '
                "event handler they have")
    return None


# server.stat-cache-engine: lighttpd's names; "inotify" and "fam" keep entries as
# "simple" does here (for a second: worker/statcache.py)
STAT_CACHE_ENGINES = ("disable", "simple", "inotify", "fam")


def _stat_cache_engine(name: str) -> str:
    if name not in STAT_CACHE_ENGINES:
        raise DirectiveValueError("can be one of " + ", ".join(f'"{e}"' for e in STAT_CACHE_ENGINES)
                                  + f", but not: {name}")
    return name


def _no_accept_filters(name: str) -> str | None:
    """server.bsd-accept-filter names a FreeBSD kernel's filter (accf_http, accf_data):
    none exists on Linux, where lighttpd ignores the key too; said, not silent."""
    if not name:
        return None
    return (f'server.bsd-accept-filter "{name}": FreeBSD accept filters do not exist on '
            "Linux; ignored, as lighttpd ignores it here (server.defer-accept is the "
            "Linux way)")


def _socket_perms(text: str) -> str:
    if text and not all(ch in "01234567" for ch in text):
        raise DirectiveValueError(f'"{text}" is not an octal file mode')
    return text


def _kept_strict(option: str) -> Callable[[bool], str | None]:
    """The warning for a config that turns `option` off."""
    def advice(on: bool) -> str | None:
        return None if on else parseopts.relaxed_warning(
            parseopts.ParseOptions(relaxed=(option,)))
    return advice


CORE_DIRECTIVES: tuple[Directive, ...] = (
    # listening and processes
    Directive("server.bind", Type.STRING, "", S, doc="address or unix socket path"),
    Directive("server.port", Type.SHORT, 80, S),
    Directive("server.use-ipv6", Type.BOOL, False, K),
    Directive("server.set-v6only", Type.BOOL, True, K),
    Directive("server.listen-backlog", Type.INT, 1024, K),
    Directive("server.socket-perms", Type.STRING, "", K, _socket_perms),
    Directive("server.defer-accept", Type.BOOL, False, K),
    Directive("server.bsd-accept-filter", Type.STRING, "", K, advice=_no_accept_filters),
    # unset: server.set-v6only decides; set, it decides an IPv6 socket's IPV6_V6ONLY
    Directive("server.v4mapped", Type.BOOL, None, K),
    Directive("server.systemd-socket-activation", Type.BOOL, False, S),
    Directive("server.max-worker", Type.SHORT, os.cpu_count() or 1, S),
    Directive("server.max-fds", Type.INT, 0, S),
    Directive("server.max-connections", Type.INT, 0, S),
    Directive("server.pid-file", Type.STRING, "", S, _absolute_or_empty),
    Directive("server.chroot", Type.STRING, "", S, _absolute_or_empty),
    Directive("server.username", Type.STRING, "", S),
    Directive("server.groupname", Type.STRING, "", S),
    Directive("server.core-files", Type.BOOL, False, S),
    Directive("server.event-handler", Type.STRING, "linux-sysepoll", S,
              convert=_event_handler, advice=_epoll_only),
    Directive("server.network-backend", Type.STRING, "sendfile", S, convert=_network_backend),
    Directive("server.modules", Type.ARRAY_VLIST, (), S),
    Directive("server.compat-module-load", Type.BOOL, True, S),
    Directive("server.feature-flags", Type.ARRAY_KVANY, None, S),
    Directive("server.graceful-shutdown-timeout", Type.INT, 8, S),
    Directive("server.worker-heartbeat-timeout", Type.INT, 30, S,
              doc="pylighttpd: a worker whose event loop is silent this long is replaced"),
    Directive("server.upload-dirs", Type.ARRAY_VLIST, ("/var/tmp",), S),
    Directive("server.stat-cache-engine", Type.STRING, "simple", S,
              convert=_stat_cache_engine),
    # limits and timeouts
    Directive("server.max-request-size", Type.INT, 0, C, doc="KiB; 0 is unlimited"),
    Directive("server.max-request-field-size", Type.INT, 8192, S),
    Directive("server.max-keep-alive-requests", Type.INT, 1000, C),
    Directive("server.max-keep-alive-idle", Type.INT, 5, C),
    Directive("server.max-read-idle", Type.INT, 60, C),
    Directive("server.max-write-idle", Type.INT, 360, C),
    Directive("server.kbytes-per-second", Type.SHORT, None, C,
              convert=ratelimit.shared_budget),
    Directive("connection.kbytes-per-second", Type.SHORT, 0, C,
              convert=ratelimit.connection_rate),
    # request handling
    Directive("server.document-root", Type.STRING, "", C),
    Directive("server.name", Type.STRING, "", C),
    Directive("server.tag", Type.STRING, "pylighttpd", C, convert=_blank_tag_emptied),
    Directive("server.follow-symlink", Type.BOOL, True, C),
    Directive("server.force-lowercase-filenames", Type.BOOL, False, C),
    Directive("server.errorfile-prefix", Type.STRING, "", C),
    Directive("server.error-handler", Type.STRING, "", C),
    Directive("server.error-handler-404", Type.STRING, "", C),
    Directive("server.error-intercept", Type.BOOL, False, C),
    Directive("server.range-requests", Type.BOOL, True, C),
    Directive("server.protocol-http11", Type.BOOL, True, C),
    # accepted and ignored, as lighttpd 1.4.69 ignores it (Expect: 100-continue is
    # answered, any other expectation is 417, whatever it says)
    Directive("server.reject-expect-100-with-417", Type.BOOL, True, S),
    Directive("server.stream-request-body", Type.INT, 0, C),
    Directive("server.stream-response-body", Type.INT, 0, C),
    Directive("server.http-parseopts", Type.ARRAY_KVANY, parseopts.DEFAULT, S,
              convert=parseopts.parse_options, advice=parseopts.relaxed_warning),
    # the older single keys: on, as pylighttpd always reads (parseopts.STRICT_ALWAYS)
    Directive("server.http-parseopt-header-strict", Type.BOOL, True, S,
              advice=_kept_strict("header-strict")),
    Directive("server.http-parseopt-host-strict", Type.BOOL, True, S,
              advice=_kept_strict("host-strict")),
    Directive("server.http-parseopt-host-normalize", Type.BOOL, False, S),
    Directive("mimetype.assign", Type.ARRAY_KVSTRING, (), C),
    Directive("mimetype.use-xattr", Type.BOOL, False, C),
    Directive("mimetype.xattr-name", Type.STRING, "Content-Type", S),
    Directive("etag.use-inode", Type.BOOL, True, C),
    Directive("etag.use-mtime", Type.BOOL, True, C),
    Directive("etag.use-size", Type.BOOL, True, C),
    # logging
    Directive("server.errorlog", Type.STRING, "", S),
    Directive("server.errorlog-use-syslog", Type.BOOL, False, S),
    Directive("server.syslog-facility", Type.STRING, "daemon", S),
    Directive("server.breakagelog", Type.STRING, "", C),
    Directive("debug.log-request-header", Type.BOOL, False, C),
    Directive("debug.log-response-header", Type.BOOL, False, C),
    Directive("debug.log-request-handling", Type.BOOL, False, C),
    Directive("debug.log-file-not-found", Type.BOOL, False, C),
    Directive("debug.log-condition-handling", Type.BOOL, False, C),
    Directive("debug.log-timeouts", Type.BOOL, False, C),
    Directive("debug.log-state-handling", Type.BOOL, False, C),
    Directive("debug.log-request-header-on-error", Type.BOOL, False, C),
)

