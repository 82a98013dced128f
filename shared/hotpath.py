"""The hot path compiled to C with mypyc, used only while it matches the sources.

The modules of `HOT_MODULES` carry every request (parse, route, stat, answer, send).
`contrib/compile.py` compiles them with mypyc into `BUILD_DIR` (inside the virtualenv,
so a build always belongs to the interpreter that made it) and writes a manifest of
the sources' hashes.  `activate()`, run when a package holding hot modules is imported
(`worker`, `worker.modules`, `shared.config`), puts that build in front of its sources
only when every hash still matches: a module edited since the build runs as Python
until it is compiled again, never as a stale extension.  Without a C compiler nothing
is built and everything runs as Python; the two behave the same, the compiled one costs
less CPU per request.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import zlib
from pathlib import Path

# <package>/<name>.py for each, from the repository's top: the modules that profiles
# of the running server show on every request (byte-set checks among them), the
# gateways' backends, exchanges and protocols (FastCGI, SCGI, CGI heads), HTTP/2 (its
# session, frames, HPACK and field checks), URL substitution, the Lua bridge, SSI's
# parser and expressions, WebDAV's properties and files, the modules (worker/modules/)
# that serve files, log them, compress them, front FastCGI, SCGI, HTTP and AJP
# applications, tunnel WebSockets and sockets, rewrite, authenticate, run scripts,
# include files (SSI) and share files over WebDAV, and those a stock config runs on
# every request (access lists, aliases, redirects, headers, expiry, virtual hosts, the
# status pages' URLs, the client's address behind a proxy),
# and the config's per-request form (which settings a request gets under conditional
# blocks, the groups its regex conditions and rules captured)
HOT_MODULES = tuple(f"worker/{name}" for name in (
    "answercache", "backend", "byteranges", "bytesets", "chunkqueue", "connection", "counters",
    "fastcgi", "gateway", "gw_cgi", "gw_exchange", "h2", "h2_connection", "h2_encoder",
    "h2_fields", "h2_hpack", "handler", "host", "http", "http1", "lists",
    "loop", "magnet_runtime", "request", "server", "settled", "ssi_expr", "ssi_parse",
    "statcache", "static", "throttle", "transport", "tunnel", "urlnorm", "urlsubst", "webdav_fs",
    "webdav_props", "webdav_request", "webdav_xml", "websocket", "wire",
    "modules/mod_staticfile", "modules/mod_dirlisting", "modules/mod_indexfile",
    "modules/mod_accesslog", "modules/mod_fastcgi", "modules/mod_scgi", "modules/mod_proxy",
    "modules/mod_wstunnel", "modules/mod_sockproxy", "modules/mod_ajp13",
    "modules/mod_rewrite", "modules/mod_auth", "modules/mod_authn_file",
    "modules/mod_magnet", "modules/mod_ssi", "modules/mod_webdav",
    "modules/mod_deflate", "modules/mod_access", "modules/mod_alias", "modules/mod_redirect",
    "modules/mod_setenv", "modules/mod_expire", "modules/mod_evhost",
    "modules/mod_simple_vhost", "modules/mod_userdir", "modules/mod_vhostdb",
    "modules/mod_status", "modules/mod_extforward")) + (
    "shared/config/compiled", "shared/config/captures")

REPO_DIR = Path(__file__).resolve().parent.parent
BUILD_DIR = Path(sys.prefix) / "pylighttpd-compiled"
MANIFEST = BUILD_DIR / "manifest.json"


@functools.cache
def source_hashes() -> dict[str, str]:
    """The CRC-32 and length of each hot module's source, by its path from the
    repository's top: read once per process, though each package holding hot modules
    asks.  What they guard against is an edit since the build, not a forgery: a
    checksum from zlib is enough, where `hashlib` loads OpenSSL's libcrypto into the
    master (3 MB of its resident memory) for a server that may never speak TLS."""
    return {name: _checksum((REPO_DIR / f"{name}.py").read_bytes()) for name in HOT_MODULES}


def _checksum(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}-{len(data)}"


def build_matches(manifest_path: Path | None = None) -> bool:
    """Whether the build at `manifest_path` (MANIFEST) was made by this interpreter
    from the sources as they are now."""
    try:
        manifest = json.loads((manifest_path or MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(manifest, dict) and manifest.get("interpreter") == sys.version
            and manifest.get("sources") == source_hashes())


def activate(package_path: list[str], package: str) -> bool:
    """Put the compiled modules of `package` ("worker", "worker/modules",
    "shared/config") first on that package's path when the build matches; True if it
    did."""
    if not build_matches():
        return False
    _load_runtime()
    package_path.insert(0, str(BUILD_DIR / package))
    return True


def _load_runtime() -> None:
    """mypyc's runtime library of the build, a top-level module that the compiled
    modules import by its name: loaded from its file.  The build directory itself never
    goes on sys.path, where its `worker/` and `shared/` directories would be taken for
    namespace packages by an interpreter that finds the real ones later (the console
    script of an editable install)."""
    for path in BUILD_DIR.glob("*__mypyc.*"):
        name = path.name.split(".", 1)[0]
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
