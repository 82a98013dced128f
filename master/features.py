"""`-V`: what this build can do, in lighttpd's `\\t+ NAME` / `\\t- NAME` form.

A feature is `+` only when pylighttpd acts on it: the worker module that provides it
is there (a file in worker/modules/) and one of the libraries it needs imports.  A
library that is merely installed does not count, and a line turns on by itself when
its module lands.
"""

from __future__ import annotations

import ctypes.util
import importlib
import os
import pkgutil
import select
import socket
from dataclasses import dataclass

import worker
import worker.modules

from . import __version__

CORE = ""   # a feature of the core: no module to wait for


@dataclass(frozen=True)
class Feature:
    """One `-V` line: present when the platform offers it, `module` exists and any of
    `libraries` imports."""

    name: str
    module: str = CORE
    libraries: tuple[str, ...] = ()
    platform: bool = True      # what this Python offers, e.g. socket.has_ipv6
    shared_library: str = ""   # a C library loaded with ctypes (found when -V runs)


# Modules are named as lighttpd names the ones that provide the feature there; HTTP/2
# is in the core, as in lighttpd 1.4.69 (worker/h2.py).
FEATURES: tuple[Feature, ...] = (
    Feature("IPv6 support", platform=socket.has_ipv6),
    Feature("zlib support", "mod_deflate", ("zlib",)),
    Feature("zstd support", "mod_deflate", ("zstandard",)),
    Feature("bzip2 support", "mod_deflate", ("bz2",)),
    Feature("brotli support", "mod_deflate", ("brotli",)),
    Feature("crypt support", "mod_authn_file", ("crypt", "passlib")),
    Feature("OpenSSL support", "mod_openssl", ("OpenSSL", "ssl")),
    Feature("PCRE support"),           # Python's re: regex conditionals always work
    Feature("MySQL support", "mod_vhostdb_mysql", ("pymysql",)),
    Feature("PgSQL support", "mod_vhostdb_pgsql", ("psycopg",)),
    Feature("DBI support", "mod_authn_dbi", ("sqlite3",)),     # worker/sql_database.py
    Feature("LDAP support", "mod_authn_ldap", ("ldap3", "ldap")),
    Feature("PAM support", "mod_authn_pam", shared_library="pam"),
    Feature("SASL support", "mod_authn_sasl", shared_library="sasl2"),
    Feature("LUA support", "mod_magnet", ("lupa",)),
    Feature("xml support", "mod_webdav", ("xml.parsers.expat",)),
    Feature("SQLite support", "mod_webdav", ("sqlite3",)),    # webdav.sqlite-db-name
    Feature("HTTP/2 support", CORE, ("hpack",)),
    Feature("httptools HTTP/1.1 parser", CORE, ("httptools",)),
    Feature("Prometheus metrics", "mod_status", ("prometheus_client",)),
    # shared/hotpath.py: built by contrib/compile.py and matching the sources
    Feature("compiled hot path (mypyc)", platform=worker.COMPILED),
)


def available_modules() -> frozenset[str]:
    """The `mod_*` files of worker/modules/: what server.modules can load."""
    return frozenset(info.name for info in pkgutil.iter_modules(worker.modules.__path__)
                     if info.name.startswith("mod_"))


def _imports(library: str) -> bool:
    try:
        importlib.import_module(library)
    except ImportError:
        return False
    return True


def is_present(feature: Feature, modules: frozenset[str]) -> bool:
    """Whether `feature` works in this build, given the module files `modules`."""
    if not feature.platform:
        return False
    if feature.module and feature.module not in modules:
        return False   # checked first: a library is imported only for a module that uses it
    if feature.shared_library and ctypes.util.find_library(feature.shared_library) is None:
        return False
    return not feature.libraries or any(map(_imports, feature.libraries))


def _line(present: bool, name: str) -> str:
    return f"\t{'+' if present else '-'} {name}\n"


def report(modules: frozenset[str] | None = None) -> str:
    """The `-V` text; `modules` (default: the files in worker/modules/) decides which
    module-provided features are there."""
    modules = available_modules() if modules is None else modules
    sections = {
        # worker/loop.py waits with epoll alone
        "Event Handlers": [
            (False, "select (generic)"),
            (False, "poll (Unix)"),
            (hasattr(select, "epoll"), "epoll (Linux)"),
            (False, "kqueue (FreeBSD)"),
        ],
        # worker/chunkqueue.py: os.sendfile for files, sendmsg (scatter/gather), send
        "Network handler": [
            (hasattr(os, "sendfile"), "linux-sendfile"),
            (hasattr(socket.socket, "sendmsg"), "writev"),
            (True, "write"),
        ],
        "Features": [(is_present(feature, modules), feature.name) for feature in FEATURES],
    }
    out = [f"pylighttpd/{__version__} - a light and fast webserver\n"]
    for title, lines in sections.items():
        out.append(f"\n{title}:\n\n")
        out.extend(_line(present, name) for present, name in lines)
    return "".join(out)
