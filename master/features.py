"""`-V`: what this build can do, in lighttpd's `\\t+ NAME` / `\\t- NAME` form.

Each line is decided by looking, not hard-coded: a package is there or it is not.
"""

from __future__ import annotations

import importlib.util
import os
import select
import socket

from . import __version__


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _line(present: bool, name: str) -> str:
    return f"\t{'+' if present else '-'} {name}\n"


def report() -> str:
    sections = {
        "Event Handlers": [
            (hasattr(select, "select"), "select (generic)"),
            (hasattr(select, "poll"), "poll (Unix)"),
            (hasattr(select, "epoll"), "epoll (Linux)"),
            (hasattr(select, "kqueue"), "kqueue (FreeBSD)"),
        ],
        "Network handler": [
            (hasattr(os, "sendfile"), "linux-sendfile"),
            (hasattr(socket.socket, "sendmsg"), "writev"),
            (True, "write"),
        ],
        "Features": [
            (socket.has_ipv6, "IPv6 support"),
            (_has("zlib"), "zlib support"),
            (_has("zstandard"), "zstd support"),
            (_has("bz2"), "bzip2 support"),
            (_has("brotli"), "brotli support"),
            (_has("crypt") or _has("passlib"), "crypt support"),
            (_has("OpenSSL"), "OpenSSL support"),
            (True, "PCRE support"),  # Python's re module: regex conditionals always work
            (_has("ldap3"), "LDAP support"),
            (_has("h2"), "HTTP/2 support"),
            (_has("httptools"), "httptools HTTP/1.1 parser"),
            (_has("prometheus_client"), "Prometheus metrics"),
        ],
    }
    out = [f"pylighttpd/{__version__} - a light and fast webserver\n"]
    for title, lines in sections.items():
        out.append(f"\n{title}:\n\n")
        out.extend(_line(present, name) for present, name in lines)
    return "".join(out)
