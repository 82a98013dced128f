"""Side-by-side benchmarks: pylighttpd, lighttpd and nginx on one docroot, 127.0.0.1 only.

Each scenario runs against every server in turn, several rounds alternating the
order, so that machine drift hits all alike.  Reported per server and scenario: the
median req/s (with min and max), p99 latency, and server CPU microseconds per request
(the CPU time of the server's whole process tree over the requests served, steadier
than req/s on a small machine that wrk shares), each also as a ratio to lighttpd.

Scenarios run on sets of the three servers ("setups"), each started only when one of
its scenarios is selected: the static one; the gateway one, whose config also loads
mod_proxy and mod_cgi (proxied to a lighttpd serving the same 1 KiB file, with pooled
backend connections and without, uploads to discard_backend.py, a sh CGI script); and
one for each of FastCGI and SCGI (php-cgi and a WSGI app under uwsgi), mod_rewrite,
mod_auth, mod_deflate, TLS (HTTP/1.1 with wrk, HTTP/2 with h2load), mod_magnet,
mod_webdav and mod_ssi; and two for production-shaped traffic (browser.lua: files
picked at random out of --files, browser headers that vary, a site's mix of
revalidations, ranges, 404s and listings), the second with access logs on.  A row whose
name ends in "-nocache" sends a new query string with every request, which
pylighttpd's answer cache never has an answer for.

    python3 loadtests/bench.py                 # everything, 3 rounds of 5 s
    python3 loadtests/bench.py --quick         # 1 round of 2 s, for a smoke test
    python3 loadtests/bench.py --only 1k-keepalive,10m --json out.json
    python3 loadtests/bench.py --only proxy-1k,proxy-1k-nopool,cgi-hello,upload
    python3 loadtests/bench.py --only https-1k,https-1k-nocache,h2-1k
    python3 loadtests/bench.py --only files-browser,files-browser-log,site-mix --files 2000
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil

from shared import hotpath

REPO = Path(__file__).resolve().parent.parent
SERVERS = ("pylighttpd", "lighttpd", "nginx")
WORKERS = 2
# the sets of servers (setups: see SETUPS)
STATIC, GATEWAYS, APPS, REWRITE, AUTH, REWRITE_AUTH, DEFLATE, TLS = (
    "static", "gateways", "apps", "rewrite", "auth", "rewrite-auth", "deflate", "tls")
BROWSER, BROWSER_LOG, MAGNET, WEBDAV, SSI = "browser", "browser-log", "magnet", "webdav", "ssi"
# the clients a scenario is run with
WRK, UPLOAD, H2LOAD = "wrk", "upload", "h2load"
CLIENT_PROGRAMS = {WRK: ("wrk",), UPLOAD: (), H2LOAD: ("h2load",)}   # UPLOAD: http.client
CGI_SCRIPT = "/cgi/hello.sh"
CGI_BODY = "hello world"
UPLOAD_FILE = "upload.bin"
UPLOAD_TIMEOUT = 120.0
RSS_SAMPLE_SECONDS = 0.01
# the special rows, run once after the rounds (footprint: before them)
SPECIALS = ("footprint", "idle", "reload")
PHP_CHILDREN = 4                  # php-cgi's PHP_FCGI_CHILDREN, uwsgi's --processes too
AUTH_USER, AUTH_PASSWORD = "bench", "bench-password"
AUTH_HEADER = "Authorization: Basic " + base64.b64encode(
    f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
GZIP_HEADER = "Accept-Encoding: gzip"
H2_REQUESTS_PER_SECOND = 4000     # h2load -n: 20,000 at the default 5 s
LIGHTTPD_MODULES = Path("/usr/lib/lighttpd")
PYLIGHTTPD_AND_LIGHTTPD = ("pylighttpd", "lighttpd")
# the production-shaped file set (make_file_set) and the wrk script that walks it
FILES = 10000                     # --files
FILE_DIRECTORIES = 100
FILE_SIZES = (2048, 12 * 1024)
LISTING_DIRECTORIES, LISTING_ENTRIES = 10, 50
FILES_MTIME = 1767225600          # 2026-01-01 00:00:00 UTC: every file's Last-Modified
FILES_LAST_MODIFIED = "Thu, 01 Jan 2026 00:00:00 GMT"
BROWSER_SCRIPT = REPO / "loadtests" / "browser.lua"
# the kinds of request a traffic cycles through, with their counts per cycle
TRAFFIC_MIXES = {
    "browser": (("file", 1),),
    "site": (("file", 12), ("revalidate", 3), ("range", 2), ("missing", 2), ("listing", 1)),
    "missing": (("missing", 1),),
}
NOT_FOUND_KINDS = ("missing",)
WSGI_APP = """\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello world\\n"]
"""


PROPFIND_BODY = ('<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:"><D:prop>'
                 "<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>"
                 "<D:getcontenttype/></D:prop></D:propfind>\n")
PROPFIND_HEADERS = ("Depth: 1", "Content-Type: application/xml; charset=utf-8")


@dataclass
class Scenario:
    name: str
    path: str
    connections: int = 50
    threads: int = 2
    headers: tuple[str, ...] = ()
    pipeline: int = 0
    expect_status: int = 200
    setup: str = STATIC               # which set of servers answers it
    servers: tuple[str, ...] = SERVERS   # the servers that do this at all
    client: str = WRK                 # UPLOAD: POSTs of --upload-mib each
    tls: bool = False                 # to the servers' TLS port
    vary_query: bool = False          # a new query string per request: no cached answer
    share: float = 1.0                # of --seconds a round lasts (rounded up to a second)
    traffic: str = ""                 # a TRAFFIC_MIXES key: browser.lua over the file set
    method: str = "GET"
    body: str = ""

    def not_found_share(self) -> float:
        """The share of its requests that ask for what is not there (404 expected)."""
        mix = TRAFFIC_MIXES.get(self.traffic, ())
        total = sum(count for _kind, count in mix)
        return sum(count for kind, count in mix if kind in NOT_FOUND_KINDS) / total if mix else 0.0


SCENARIOS = [
    Scenario("1k-keepalive", "/1k.bin"),
    Scenario("16k-keepalive", "/16k.bin"),
    Scenario("10m", "/10m.bin", connections=4),
    Scenario("1k-close", "/1k.bin", headers=("Connection: close",)),
    Scenario("404", "/missing.bin", expect_status=404),
    Scenario("dirlisting", "/dir/"),
    Scenario("pipeline-16", "/1k.bin", connections=16, pipeline=16),
    Scenario("proxy-1k", "/proxy/1k.bin", setup=GATEWAYS),
    Scenario("proxy-1k-nopool", "/nopool/1k.bin", setup=GATEWAYS),
    Scenario("cgi-hello", CGI_SCRIPT, setup=GATEWAYS, servers=PYLIGHTTPD_AND_LIGHTTPD),
    Scenario("upload", "/upload/", setup=GATEWAYS, client=UPLOAD),
    Scenario("1k-keepalive-gateways", "/1k.bin", setup=GATEWAYS),
    # the modules' rows: 2 s a round at the default 5 s, to keep the whole run short
    Scenario("fastcgi-php-hello", "/hello.php", setup=APPS, share=0.4),
    Scenario("scgi-wsgi-hello", "/wsgi/hello", setup=APPS, share=0.4),
    Scenario("rewrite-1k", "/rw/1k.bin", setup=REWRITE, share=0.4),
    Scenario("rewrite-1k-nocache", "/rw/1k.bin", setup=REWRITE, vary_query=True, share=0.4),
    Scenario("auth-basic-1k", "/auth/1k.bin", setup=AUTH, headers=(AUTH_HEADER,), share=0.4),
    Scenario("rewrite-auth-1k", "/rw/auth/1k.bin", setup=REWRITE_AUTH, headers=(AUTH_HEADER,),
             share=0.4),
    Scenario("rewrite-auth-1k-nocache", "/rw/auth/1k.bin", setup=REWRITE_AUTH,
             headers=(AUTH_HEADER,), vary_query=True, share=0.4),
    Scenario("gzip-1k", "/gz/1k.txt", setup=DEFLATE, headers=(GZIP_HEADER,), share=0.4),
    Scenario("gzip-1k-nocache", "/gz/1k.txt", setup=DEFLATE, headers=(GZIP_HEADER,),
             vary_query=True, share=0.4),
    Scenario("gzip-50k", "/gz/50k.txt", setup=DEFLATE, headers=(GZIP_HEADER,), share=0.4),
    Scenario("gzip-50k-nocache", "/gz/50k.txt", setup=DEFLATE, headers=(GZIP_HEADER,),
             vary_query=True, share=0.4),
    Scenario("gzip-100k-cachedir", "/cached/100k.html", setup=DEFLATE,
             headers=(GZIP_HEADER,), servers=PYLIGHTTPD_AND_LIGHTTPD, share=0.4),
    Scenario("gzip-100k-cachedir-nocache", "/cached/100k.html", setup=DEFLATE,
             headers=(GZIP_HEADER,), vary_query=True, servers=PYLIGHTTPD_AND_LIGHTTPD,
             share=0.4),
    Scenario("https-1k", "/1k.bin", setup=TLS, tls=True, share=0.4),
    Scenario("https-1k-nocache", "/1k.bin", setup=TLS, tls=True, vary_query=True, share=0.4),
    Scenario("https-1k-close", "/1k.bin", setup=TLS, tls=True,
             headers=("Connection: close",), share=0.4),
    Scenario("https-1k-close-nocache", "/1k.bin", setup=TLS, tls=True,
             headers=("Connection: close",), vary_query=True, share=0.4),
    Scenario("https-10m", "/10m.bin", setup=TLS, tls=True, connections=4, share=0.4),
    Scenario("h2-1k", "/1k.bin", setup=TLS, tls=True, client=H2LOAD, connections=20),
]


def with_nocache_twins(*scenarios: Scenario) -> list[Scenario]:
    """Each scenario followed by its "-nocache" twin (a new query string per request)."""
    return [twin for scenario in scenarios
            for twin in (scenario, replace(scenario, name=scenario.name + "-nocache",
                                           vary_query=True))]


# production-shaped traffic: many files at random, browser headers, a site's mix
SCENARIOS += with_nocache_twins(
    Scenario("files-browser", "/files/", setup=BROWSER, traffic="browser", share=0.6),
    Scenario("files-browser-log", "/files/", setup=BROWSER_LOG, traffic="browser", share=0.6),
    Scenario("site-mix", "/files/", setup=BROWSER, traffic="site", share=0.6),
    Scenario("404-browser", "/files/", setup=BROWSER, traffic="missing", share=0.6))
SCENARIOS.append(Scenario("404-nocache", "/missing.bin", expect_status=404, vary_query=True))
# scripting, WebDAV and SSI (nginx runs no Lua and has no PROPFIND without extra modules)
SCENARIOS += with_nocache_twins(
    Scenario("magnet-1k", "/magnet/1k.bin", setup=MAGNET, servers=PYLIGHTTPD_AND_LIGHTTPD,
             share=0.4),
    Scenario("propfind-100", "/dav/", setup=WEBDAV, servers=PYLIGHTTPD_AND_LIGHTTPD,
             method="PROPFIND", body=PROPFIND_BODY, headers=PROPFIND_HEADERS, share=0.4),
    Scenario("ssi-small", "/ssi/page.shtml", setup=SSI, share=0.4))


@dataclass
class Measurement:
    server: str
    scenario: str
    requests_per_second: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int
    bad_status: int
    # the upload rows: body bytes through the proxy per second, the server tree's
    # largest RSS while it took them, and how much above its RSS before that was
    megabytes_per_second: float = 0.0
    peak_rss_bytes: int = 0
    rss_growth_bytes: int = 0


@dataclass
class Report:
    rounds: list[Measurement] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def machine() -> dict[str, Any]:
    """What a run was measured on: the servers' rates move with the machine (between
    two sessions' machines lighttpd's own by 35-45 %), so runs compare by their ratios,
    and by their figures only on the same machine.  `compiled`: whether pylighttpd
    ran its hot path compiled (shared/hotpath.py); `python_home`: the interpreter's
    installation (Debian's /usr, built with PGO and LTO and linked statically, costs
    about 15 % less CPU a request than a plain `./configure --enable-shared` build such
    as pyenv's); `load`: the load average before."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False
                            ).stdout.strip() if shutil.which("git") else ""
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "python_home": sys.base_prefix,
            "compiled": hotpath.build_matches(),
            "commit": commit, "load": [round(value, 2) for value in os.getloadavg()]}


# ----------------------------------------------------------------- fixtures
def make_docroot(base: Path) -> Path:
    docroot = base / "www"
    (docroot / "dir").mkdir(parents=True)
    (docroot / "1k.bin").write_bytes(os.urandom(1024))
    (docroot / "16k.bin").write_bytes(os.urandom(16 * 1024))
    (docroot / "10m.bin").write_bytes(os.urandom(10 * 1024 * 1024))
    (docroot / "index.html").write_text("<html><body>bench</body></html>\n")
    for number in range(50):
        (docroot / "dir" / f"file-{number:03}.txt").write_text("x" * number)
    return docroot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Site:
    """What one server's config is made of: its ports, the docroot, its setup's
    directory (configs, logs, caches) and what that setup's backends listen on."""

    name: str
    port: int
    tls_port: int
    docroot: Path
    base: Path
    accesslog: bool
    backends: dict[str, Any]


def no_text(_site: Site) -> str:
    return ""


def no_backends(_base: Path, _docroot: Path, _stack: contextlib.ExitStack) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Setup:
    """One set of the three servers: the modules and settings its config adds to the
    static one (the same text for pylighttpd and lighttpd), what nginx gets for them,
    and `prepare`, which makes its files and starts its backends (stopped when the
    stack closes, after the servers) and says where they listen."""

    modules: tuple[str, ...] = ()
    settings: Callable[[Site], str] = no_text
    nginx_http: Callable[[Site], str] = no_text
    nginx_server: Callable[[Site], str] = no_text
    prepare: Callable[[Path, Path, contextlib.ExitStack], dict[str, Any]] = no_backends
    requires: tuple[str, ...] = ()    # programs, or files (absolute paths), it needs
    lighttpd_plugin: str = ""         # a lighttpd module Debian packages apart
    accesslog: bool = False           # access logs on whatever --accesslog says
    file_set: bool = False            # serves make_file_set's files (--files of them)


def lighttpd_style_config(docroot: Path, port: int, base: Path, accesslog: bool,
                          name: str) -> Path:
    """The static setup's config for a server listening on `port` (microbench.py)."""
    return write_lighttpd_config(Site(name, port, free_port(), docroot, base, accesslog, {}),
                                 SETUPS[STATIC])


def write_lighttpd_config(site: Site, setup: Setup) -> Path:
    """One config both pylighttpd and lighttpd read: that is the point of the project."""
    base, name = site.base, site.name
    log = f'accesslog.filename = "{base}/{name}-access.log"\n' if site.accesslog else ""
    modules = '"mod_accesslog", ' if site.accesslog else ""
    modules += "".join(f'"{module}", ' for module in setup.modules)
    path = base / f"{name}.conf"
    path.write_text(
        f'server.document-root = "{site.docroot}"\nserver.bind = "127.0.0.1"\n'
        f"server.port = {site.port}\nserver.max-worker = {WORKERS}\n"
        f"server.modules = ({modules}\"mod_dirlisting\", \"mod_staticfile\")\n"
        'dir-listing.activate = "enable"\nserver.max-fds = 19000\n'
        "server.max-connections = 9000\nserver.max-keep-alive-requests = 1000000\n"
        "server.max-keep-alive-idle = 120\nserver.max-read-idle = 120\n"
        f'mimetype.assign = (".bin" => "application/octet-stream", ".html" => "text/html")\n'
        f'server.errorlog = "{base}/{name}-error.log"\n{log}{setup.settings(site)}')
    return path


def nginx_config(site: Site, setup: Setup) -> Path:
    base = site.base
    path = base / "nginx.conf"
    log = f"access_log {base}/nginx-access.log;" if site.accesslog else "access_log off;"
    path.write_text(f"""
user root;
worker_processes {WORKERS};
worker_rlimit_nofile 19000;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log;
events {{ worker_connections 9000; }}
http {{
    types {{ application/octet-stream bin; text/html html; }}
    sendfile on; tcp_nopush on;
    keepalive_requests 1000000; keepalive_timeout 120s;
    {log}
    client_body_temp_path {base}/nginx-body;
    proxy_temp_path {base}/nginx-proxy;
    fastcgi_temp_path {base}/nginx-fastcgi;
    uwsgi_temp_path {base}/nginx-uwsgi;
    scgi_temp_path {base}/nginx-scgi;
    {setup.nginx_http(site)}
    server {{
        listen 127.0.0.1:{site.port} reuseport;
        root {site.docroot};
        location /dir/ {{ autoindex on; }}
        {setup.nginx_server(site)}
    }}
}}
""")
    return path


# ------------------------------------------------------------ backends
class Backend:
    """A process the servers of a setup talk to (its CPU time is not counted: the same
    backend does the same work behind every server), in a session of its own so that
    it is stopped with its children; `address` is a 127.0.0.1 port or a unix socket."""

    def __init__(self, argv: list[str], address: int | Path, stop_signal: int = signal.SIGTERM,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.address = address
        self.stop_signal = stop_signal
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        env={**os.environ, **(env or {})}, cwd=cwd)
        try:
            wait_listening(address, self.process)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, self.stop_signal)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


def wait_listening(address: int | Path, process: subprocess.Popen,
                   timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if isinstance(address, Path):
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(address))
            else:
                socket.create_connection(("127.0.0.1", address), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {address} (exit status {process.poll()})")


def start_backend(stack: contextlib.ExitStack, argv: list[str], address: int | Path,
                  **options: Any) -> Backend:
    backend = Backend(argv, address, **options)
    stack.callback(backend.stop)
    return backend


# ------------------------------------------------------------- gateways
def start_gateway_backends(base: Path, docroot: Path, stack: contextlib.ExitStack
                           ) -> dict[str, Any]:
    """What the gateway scenarios' front servers proxy to: a lighttpd (two workers, as
    the fronts) serving the 1 KiB file under /proxy/ and /nopool/, and
    discard_backend.py for uploads; and the sh CGI script."""
    add_cgi_script(docroot)
    backend_root = base / "backend"
    for prefix in ("", "proxy", "nopool"):
        (backend_root / "www" / prefix).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(docroot / "1k.bin", backend_root / "www" / prefix / "1k.bin")
    static = RunningServer("lighttpd", backend_root / "www", backend_root, accesslog=False)
    stack.callback(static.stop)
    discard_port = free_port()
    start_backend(stack, [sys.executable, str(REPO / "loadtests" / "discard_backend.py"),
                          str(discard_port)], discard_port)
    return {"static": static.port, "discard": discard_port}


def add_cgi_script(docroot: Path) -> None:
    """The CGI hello world, run by /bin/sh (cgi.assign) in both servers."""
    script = docroot / CGI_SCRIPT.lstrip("/")
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n"
                      f"{CGI_BODY}\\n'\n")


def gateway_settings(site: Site) -> str:
    """mod_proxy and mod_cgi, the same for pylighttpd and lighttpd.  /nopool/ sets
    pylighttpd's "keepalive" to 0: a new backend connection for every request, as
    lighttpd always does (it takes the key and ignores it)."""
    backend = f'"host" => "127.0.0.1", "port" => {site.backends["static"]}'
    return (f'server.upload-dirs = ("{site.base}")\ncgi.assign = (".sh" => "/bin/sh")\n'
            f'proxy.server = ( "/proxy/" => (( {backend} )),\n'
            f'  "/nopool/" => (( {backend}, "keepalive" => 0 )),\n'
            f'  "/upload/" => (( "host" => "127.0.0.1", "port" => {site.backends["discard"]} )) )\n')


def nginx_upstreams(site: Site) -> str:
    """Backends with idle connections kept per worker, as pylighttpd's default (64)."""
    return (f"upstream static-backend {{ server 127.0.0.1:{site.backends['static']}; "
            "keepalive 64; }\n"
            f"    upstream discard-backend {{ server 127.0.0.1:{site.backends['discard']}; "
            "keepalive 64; }")


def nginx_proxy_locations(site: Site) -> str:
    """/proxy/ and /upload/ pooled (HTTP/1.1 to the backend, no Connection: close),
    /nopool/ nginx's default (HTTP/1.0, a connection per request).  The upload's body
    is spooled to disk before it goes on, as pylighttpd and lighttpd do by default."""
    pooled = 'proxy_http_version 1.1; proxy_set_header Connection "";'
    return (f"location /proxy/ {{ proxy_pass http://static-backend; {pooled} }}\n"
            f"        location /nopool/ {{ proxy_pass http://127.0.0.1:{site.backends['static']}; }}\n"
            f"        location /upload/ {{ proxy_pass http://discard-backend; {pooled} "
            "client_max_body_size 0; }")


# --------------------------------------------------- FastCGI and SCGI apps
def start_app_backends(base: Path, docroot: Path, stack: contextlib.ExitStack
                       ) -> dict[str, Any]:
    """One php-cgi (`-b` on a unix socket, PHP_FCGI_CHILDREN=4, its children never
    recycled) and one uwsgi (4 processes speaking SCGI on a unix socket, running
    WSGI_APP) shared by the three servers, which connect to them for every request."""
    (docroot / "hello.php").write_text('<?php echo "hello world\\n";\n')
    app = base / "hello_wsgi.py"
    app.write_text(WSGI_APP)
    php, wsgi = base / "php.sock", base / "wsgi.sock"
    start_backend(stack, ["php-cgi", "-b", str(php)], php,
                  env={"PHP_FCGI_CHILDREN": str(PHP_CHILDREN), "PHP_FCGI_MAX_REQUESTS": "0"})
    # uwsgi's master takes seconds to stop on SIGTERM; nothing of it is worth keeping
    start_backend(stack, ["uwsgi", "--plugin", "python3", "--scgi-socket", str(wsgi),
                          "--wsgi-file", str(app), "--processes", str(PHP_CHILDREN),
                          "--master", "--disable-logging"], wsgi,
                  stop_signal=signal.SIGKILL, cwd=base)
    return {"php": php, "wsgi": wsgi}


def app_settings(site: Site) -> str:
    return (f'fastcgi.server = ( ".php" => (( "socket" => "{site.backends["php"]}" )) )\n'
            f'scgi.server = ( "/wsgi/" => (( "socket" => "{site.backends["wsgi"]}",\n'
            '                                 "check-local" => "disable" )) )\n')


def nginx_app_locations(site: Site) -> str:
    return ("location ~ \\.php$ { include /etc/nginx/fastcgi_params; "
            "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; "
            f"fastcgi_pass unix:{site.backends['php']}; }}\n"
            f"        location /wsgi/ {{ include /etc/nginx/scgi_params; "
            f"scgi_pass unix:{site.backends['wsgi']}; }}")


# ------------------------------------------------------------ mod_rewrite
REWRITE_RULES = ('url.rewrite-once = ( "^/old/(.*)$" => "/$1",\n'
                 '                     "^/rw/([^?]*)(\\?.*)?$" => "/$1$2" )\n')


def rewrite_settings(_site: Site) -> str:
    return REWRITE_RULES


def nginx_rewrites(_site: Site) -> str:
    """The same two rules; nginx matches the path alone and keeps the query string."""
    return "rewrite ^/old/(.*)$ /$1 last;\n        rewrite ^/rw/(.*)$ /$1 last;"


# --------------------------------------------------------------- mod_auth
def make_auth_files(base: Path, docroot: Path, _stack: contextlib.ExitStack
                    ) -> dict[str, Any]:
    """The 1 KiB file under /auth/ and a bcrypt htpasswd file (Apache's htpasswd -B)."""
    (docroot / "auth").mkdir(exist_ok=True)
    shutil.copyfile(docroot / "1k.bin", docroot / "auth" / "1k.bin")
    userfile = base / "htpasswd"
    subprocess.run(["htpasswd", "-cbB", str(userfile), AUTH_USER, AUTH_PASSWORD],
                   check=True, capture_output=True, timeout=30)
    return {"userfile": userfile}


def auth_settings(site: Site) -> str:
    """Basic auth on /auth/, a good login kept 10 minutes (auth.cache): the bcrypt
    check runs once, not with every request."""
    return ('auth.backend = "htpasswd"\n'
            f'auth.backend.htpasswd.userfile = "{site.backends["userfile"]}"\n'
            'auth.cache = ( "max-age" => "600" )\n'
            'auth.require = ( "/auth/" => ( "method" => "basic", "realm" => "bench",\n'
            '                               "require" => "valid-user" ) )\n')


def nginx_auth_location(site: Site) -> str:
    """nginx keeps no login: it checks the bcrypt hash with every request."""
    return (f'location /auth/ {{ auth_basic "bench"; '
            f'auth_basic_user_file {site.backends["userfile"]}; }}')


# ------------------------------------------------- mod_rewrite and mod_auth
def rewrite_auth_settings(site: Site) -> str:
    """The two rewrite rules in front of Basic auth: /rw/auth/1k.bin becomes the
    protected /auth/1k.bin."""
    return REWRITE_RULES + auth_settings(site)


def nginx_rewrite_auth(site: Site) -> str:
    return nginx_rewrites(site) + "\n        " + nginx_auth_location(site)


# ------------------------------------------------------------ mod_deflate
def make_text_files(_base: Path, docroot: Path, _stack: contextlib.ExitStack
                    ) -> dict[str, Any]:
    """Text that compresses as prose does (about 3:1): 1 KiB and 50 KiB under /gz/,
    100 KiB of html under /cached/ (where a compressed copy is kept on disk)."""
    words = random.Random(1).choices(
        "the of and to in is that it for on was with as by at from this be".split()
        + [f"w{n}" for n in range(400)], k=30000)
    text = " ".join(words)
    for directory, name, size in (("gz", "1k.txt", 1024), ("gz", "50k.txt", 50 * 1024),
                                  ("cached", "100k.html", 100 * 1024)):
        (docroot / directory).mkdir(exist_ok=True)
        (docroot / directory / name).write_text(text[:size])
    return {}


def deflate_settings(site: Site) -> str:
    cache = site.base / f"{site.name}-deflate-cache"
    cache.mkdir(exist_ok=True)
    return ('mimetype.assign += ( ".txt" => "text/plain" )\n'
            'deflate.mimetypes = ( "text/" )\ndeflate.allowed-encodings = ( "gzip" )\n'
            f'$HTTP["url"] =^ "/cached/" {{ deflate.cache-dir = "{cache}" }}\n')


def nginx_gzip(_site: Site) -> str:
    """gzip at zlib's default level, as mod_deflate's default (nginx's own is 1), with
    `Vary: Accept-Encoding` as mod_deflate sends it."""
    return "gzip on; gzip_types text/plain; gzip_comp_level 6; gzip_vary on;"


def nginx_text_types(_site: Site) -> str:
    return "location /gz/ { types { text/plain txt; } }"


# ------------------------------------------------------------ mod_openssl
def make_certificate(base: Path, _docroot: Path, _stack: contextlib.ExitStack
                     ) -> dict[str, Any]:
    """A self-signed RSA 2048 certificate, the key and both in one PEM file."""
    crt, key = base / "cert.pem", base / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "2",
                    "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    pem = base / "server.pem"
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return {"crt": crt, "key": key, "pem": pem}


def tls_settings(site: Site) -> str:
    """TLS on a second socket (HTTP/2 offered by ALPN, both servers' default); the
    plain port stays for the readiness check."""
    return (f'$SERVER["socket"] == "127.0.0.1:{site.tls_port}" {{\n'
            f'  ssl.engine = "enable"\n  ssl.pemfile = "{site.backends["pem"]}"\n}}\n')


def nginx_tls_listener(site: Site) -> str:
    """TLS 1.2 and 1.3, lighttpd's default (nginx 1.22's own stops at 1.2)."""
    return (f"listen 127.0.0.1:{site.tls_port} ssl http2 reuseport;\n"
            f"        ssl_certificate {site.backends['crt']}; "
            f"ssl_certificate_key {site.backends['key']}; ssl_protocols TLSv1.2 TLSv1.3;")


# ------------------------------------------------- production-shaped traffic
def make_file_set(docroot: Path, count: int, seed: int = 15) -> None:
    """`count` files of 2-12 KiB (sizes from a seeded random) in FILE_DIRECTORIES
    directories, /files/dNN/imgNNNNN.jpg (file i in directory i % FILE_DIRECTORIES,
    as browser.lua names them), and LISTING_DIRECTORIES directories of LISTING_ENTRIES
    small files each, /lists/lNN/, for directory listings.  Every file's mtime is
    FILES_MTIME, so that one If-Modified-Since revalidates all of them with every server."""
    sizes = random.Random(seed)
    content = random.Random(seed).randbytes(FILE_SIZES[1])
    made = []
    for directory in range(min(FILE_DIRECTORIES, count)):
        (docroot / "files" / f"d{directory:02}").mkdir(parents=True)
    for number in range(count):
        path = docroot / "files" / f"d{number % FILE_DIRECTORIES:02}" / f"img{number:05}.jpg"
        path.write_bytes(content[:sizes.randint(*FILE_SIZES)])
        made.append(path)
    for directory in range(LISTING_DIRECTORIES):
        listing = docroot / "lists" / f"l{directory:02}"
        listing.mkdir(parents=True)
        for entry in range(LISTING_ENTRIES):
            path = listing / f"photo-{entry:03}.jpg"
            path.write_bytes(content[:sizes.randint(100, 4000)])
            made.append(path)
    for path in made:
        os.utime(path, (FILES_MTIME, FILES_MTIME))


def browser_script_args(scenario: Scenario, files: int) -> list[str]:
    """browser.lua's arguments (after wrk's `--`) for a traffic scenario."""
    mix = ",".join(f"{kind}:{count}" for kind, count in TRAFFIC_MIXES[scenario.traffic])
    return [str(files), str(min(FILE_DIRECTORIES, files)), str(LISTING_DIRECTORIES), mix,
            FILES_LAST_MODIFIED, "1" if scenario.vary_query else "0"]


def jpeg_type(_site: Site) -> str:
    return 'mimetype.assign += ( ".jpg" => "image/jpeg" )\n'


def nginx_file_set_locations(_site: Site) -> str:
    """Listings of /lists/ (lighttpd's and pylighttpd's dir-listing.activate is on for
    the whole site already)."""
    jpeg = "types { image/jpeg jpg; }"
    return (f"location /files/ {{ {jpeg} }}\n"
            f"        location /lists/ {{ autoindex on; {jpeg} }}")


# ------------------------------------------- mod_magnet, mod_webdav, mod_ssi
MAGNET_SCRIPT = 'lighty.r.resp_header["X-Bench"] = "magnet"\n'
DAV_FILES = 100
SSI_PAGE = ('<html><head><title>bench</title></head><body>\n'
            '<!--#include virtual="/ssi/part.html" -->\n'
            '<p>This page is <!--#echo var="DOCUMENT_URI" -->.</p>\n</body></html>\n')
SSI_PART = "<p>an included part</p>\n"


def copy_1k_file(docroot: Path, directory: str) -> None:
    (docroot / directory).mkdir(exist_ok=True)
    shutil.copyfile(docroot / "1k.bin", docroot / directory / "1k.bin")


def make_magnet_script(base: Path, docroot: Path, _stack: contextlib.ExitStack
                       ) -> dict[str, Any]:
    """The 1 KiB file under /magnet/ and a Lua script that sets a response header."""
    copy_1k_file(docroot, "magnet")
    script = base / "header.lua"
    script.write_text(MAGNET_SCRIPT)
    return {"script": script}


def magnet_settings(site: Site) -> str:
    return ('$HTTP["url"] =^ "/magnet/" {\n'
            f'  magnet.attract-physical-path-to = ( "{site.backends["script"]}" )\n}}\n')


def make_dav_collection(_base: Path, docroot: Path, _stack: contextlib.ExitStack
                        ) -> dict[str, Any]:
    """/dav/: a collection of DAV_FILES files of 1 to 100 bytes."""
    (docroot / "dav").mkdir(exist_ok=True)
    for number in range(DAV_FILES):
        (docroot / "dav" / f"document-{number:03}.txt").write_text("x" * (number + 1))
    return {}


def webdav_settings(_site: Site) -> str:
    return ('$HTTP["url"] =^ "/dav/" {\n  webdav.activate = "enable"\n'
            '  webdav.is-readonly = "enable"\n}\n')


def make_ssi_page(_base: Path, docroot: Path, _stack: contextlib.ExitStack
                  ) -> dict[str, Any]:
    """/ssi/page.shtml: a small page with an include and an echo."""
    (docroot / "ssi").mkdir(exist_ok=True)
    (docroot / "ssi" / "page.shtml").write_text(SSI_PAGE)
    (docroot / "ssi" / "part.html").write_text(SSI_PART)
    return {}


def ssi_settings(_site: Site) -> str:
    return 'ssi.extension = ( ".shtml" )\n'


def nginx_ssi_location(_site: Site) -> str:
    return "location /ssi/ { ssi on; types { text/html shtml html; } }"


SETUPS = {
    STATIC: Setup(),
    GATEWAYS: Setup(("mod_proxy", "mod_cgi"), gateway_settings, nginx_upstreams,
                    nginx_proxy_locations, start_gateway_backends, ("lighttpd",)),
    APPS: Setup(("mod_fastcgi", "mod_scgi"), app_settings,
                nginx_server=nginx_app_locations, prepare=start_app_backends,
                requires=("php-cgi", "uwsgi", "/usr/lib/uwsgi/plugins/python3_plugin.so")),
    REWRITE: Setup(("mod_rewrite",), rewrite_settings, nginx_server=nginx_rewrites),
    AUTH: Setup(("mod_auth", "mod_authn_file"), auth_settings,
                nginx_server=nginx_auth_location, prepare=make_auth_files,
                requires=("htpasswd",)),
    REWRITE_AUTH: Setup(("mod_rewrite", "mod_auth", "mod_authn_file"), rewrite_auth_settings,
                        nginx_server=nginx_rewrite_auth, prepare=make_auth_files,
                        requires=("htpasswd",)),
    DEFLATE: Setup(("mod_deflate",), deflate_settings, nginx_http=nginx_gzip,
                   nginx_server=nginx_text_types, prepare=make_text_files,
                   lighttpd_plugin="mod_deflate.so"),
    TLS: Setup(("mod_openssl",), tls_settings, nginx_server=nginx_tls_listener,
               prepare=make_certificate, requires=("openssl",),
               lighttpd_plugin="mod_openssl.so"),
    BROWSER: Setup(settings=jpeg_type, nginx_server=nginx_file_set_locations, file_set=True),
    BROWSER_LOG: Setup(settings=jpeg_type, nginx_server=nginx_file_set_locations,
                       file_set=True, accesslog=True),
    MAGNET: Setup(("mod_magnet",), magnet_settings, prepare=make_magnet_script,
                  lighttpd_plugin="mod_magnet.so"),
    WEBDAV: Setup(("mod_webdav",), webdav_settings, prepare=make_dav_collection,
                  lighttpd_plugin="mod_webdav.so"),
    SSI: Setup(("mod_ssi",), ssi_settings, nginx_server=nginx_ssi_location,
               prepare=make_ssi_page, lighttpd_plugin="mod_ssi.so"),
}


# --------------------------------------------------------------- servers
class RunningServer:
    def __init__(self, name: str, docroot: Path, base: Path, accesslog: bool,
                 setup: Setup | None = None, backends: dict[str, Any] | None = None) -> None:
        self.name = name
        self.port, self.tls_port = free_port(), free_port()
        site = Site(name, self.port, self.tls_port, docroot, base, accesslog, backends or {})
        setup = setup or SETUPS[STATIC]
        if name == "nginx":
            conf = nginx_config(site, setup)
            command = ["nginx", "-c", str(conf), "-g", "daemon off;"]
        else:
            conf = write_lighttpd_config(site, setup)
            command = ([sys.executable, "-m", "master.cli", "-D", "-f", str(conf)]
                       if name == "pylighttpd" else ["lighttpd", "-D", "-f", str(conf)])
        self.config = conf
        # a session of its own: lighttpd signals its whole process group on stop
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        env={**os.environ, "PYTHONPATH": str(REPO)})
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET /1k.bin HTTP/1.0\r\n\r\n")
                    if sock.recv(12).startswith(b"HTTP/1."):
                        time.sleep(0.3)   # let every worker come up
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU time of the process tree, processes that have exited included: workers
        a reload replaced are in the master's children_* once reaped, CGI scripts in
        their worker's."""
        total = 0.0
        for process in self.tree():
            try:
                times = process.cpu_times()
                total += (times.user + times.system + times.children_user +
                          times.children_system)
            except psutil.Error:
                continue
        return total

    def memory(self, kind: str) -> int:
        total = 0
        for process in self.tree():
            try:
                info = process.memory_full_info() if kind == "pss" else process.memory_info()
                total += getattr(info, kind)
            except psutil.Error:
                continue
        return total

    def reload(self) -> None:
        if self.name == "nginx":
            subprocess.run(["nginx", "-c", str(self.config), "-s", "reload"],
                           capture_output=True, timeout=10)
        else:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM if self.name != "nginx" else signal.SIGQUIT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            for process in self.tree():
                process.kill()


def start_servers(setup: str, names: list[str], docroot: Path, base: Path,
                  accesslog: bool, stack: contextlib.ExitStack) -> dict[str, RunningServer]:
    """The servers of one setup (in a directory of its own but the static one's), each
    stopped when `stack` closes, the setup's backends after them."""
    if setup != STATIC:
        base = base / setup
        base.mkdir()
    backends = SETUPS[setup].prepare(base, docroot, stack)
    started = {}
    for name in names:
        started[name] = RunningServer(name, docroot, base,
                                      accesslog or SETUPS[setup].accesslog, SETUPS[setup],
                                      backends)
        stack.callback(started[name].stop)
    return started


def missing_programs(scenario: Scenario, servers: list[str]) -> list[str]:
    """What a scenario needs on this machine and does not find: its client, the
    servers but pylighttpd, its setup's programs and lighttpd plugin."""
    setup = SETUPS[scenario.setup]
    needed = [name for name in servers if name in scenario.servers and name != "pylighttpd"]
    needed += [*setup.requires, *CLIENT_PROGRAMS[scenario.client]]
    if setup.lighttpd_plugin and "lighttpd" in servers:
        needed.append(str(LIGHTTPD_MODULES / setup.lighttpd_plugin))
    return [need for need in needed
            if not (Path(need).exists() if need.startswith("/") else shutil.which(need))]


# ------------------------------------------------------------------- wrk
_WRK_REQUESTS = re.compile(r"(\d+) requests in")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_P99 = re.compile(r"\s99%\s+([\d.]+)(us|ms|s)\b")


# A new query string with every request ("?THREAD.N"), so that no two requests of a
# run are alike: pylighttpd's answer cache (worker/answercache.py) keys answers on the
# raw target, so it never has one to replay.  wrk.format adds the -H headers.
VARYING_QUERY = """\
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local sent = 0
function request()
  sent = sent + 1
  return wrk.format(nil, wrk.path .. "?" .. id .. "." .. sent)
end
"""


def wrk_script(base: Path, scenario: Scenario) -> Path | None:
    """The Lua script a scenario needs with wrk, written into `base`, or None: the
    traffic rows' browser.lua, a method and body other than a bare GET, a new query
    string per request, HTTP/1.1 pipelining."""
    if scenario.traffic:
        return BROWSER_SCRIPT
    text = ""
    if scenario.method != "GET":
        text += f'wrk.method = "{scenario.method}"\n'
    if scenario.body:
        text += f"wrk.body = [==[{scenario.body}]==]\n"
    if scenario.vary_query:
        text += VARYING_QUERY
    elif scenario.pipeline:
        text += ("init = function(args)\n  local r = {}\n"
                 f"  for i = 1, {scenario.pipeline} do r[i] = wrk.format(nil, \"{scenario.path}\") end\n"
                 "  req = table.concat(r)\nend\nrequest = function() return req end\n")
    if not text:
        return None
    script = base / f"{scenario.name}.lua"
    script.write_text(text)
    return script


def url(server: RunningServer, scenario: Scenario) -> str:
    if scenario.tls:
        return f"https://127.0.0.1:{server.tls_port}{scenario.path}"
    return f"http://127.0.0.1:{server.port}{scenario.path}"


def round_seconds(scenario: Scenario, seconds: float) -> int:
    """How long a round of `scenario` lasts: its share of --seconds, in whole seconds
    (what wrk takes), at least one."""
    return max(1, math.ceil(seconds * scenario.share - 1e-9))


def wrk_counts(output: str) -> tuple[int, int, int]:
    """From wrk's report: (requests, socket errors, non-2xx/3xx answers)."""
    requests = int(_WRK_REQUESTS.search(output).group(1))
    errors = _WRK_ERRORS.search(output)
    non2xx = _WRK_NON2XX.search(output)
    return (requests, sum(int(n) for n in errors.groups()) if errors else 0,
            int(non2xx.group(1)) if non2xx else 0)


def unexpected_statuses(scenario: Scenario, requests: int, non2xx: int) -> int:
    """How many of wrk's "Non-2xx or 3xx responses" are wrong: none for a row that
    expects an error status; beyond its expected share of 404s for a traffic row (its
    cycle of kinds is fixed per wrk thread, so the share holds up to a cycle per
    thread and the requests still in flight when wrk stops)."""
    if scenario.expect_status >= 400:
        return 0
    share = scenario.not_found_share()
    if not share:
        return non2xx
    cycle = sum(count for _kind, count in TRAFFIC_MIXES[scenario.traffic])
    allowed = math.ceil(share * requests) + scenario.threads * cycle + scenario.connections
    return max(0, non2xx - allowed)


def run_wrk(server: RunningServer, scenario: Scenario, seconds: float, base: Path,
            files: int = FILES) -> Measurement:
    """One wrk run; `files` is how many make_file_set made (the traffic rows)."""
    seconds = round_seconds(scenario, seconds)
    command = ["wrk", f"-t{scenario.threads}", f"-c{scenario.connections}",
               f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for header in scenario.headers:
        command += ["-H", header]
    script = wrk_script(base, scenario)
    if script:
        command += ["-s", str(script)]
    command.append(url(server, scenario))
    if scenario.traffic:
        command += ["--", *browser_script_args(scenario, files)]
    cpu_before = server.cpu_seconds()
    output = subprocess.run(command, capture_output=True, text=True,
                            timeout=seconds + 60).stdout
    cpu = server.cpu_seconds() - cpu_before
    requests, errors, non2xx = wrk_counts(output)
    bad_status = unexpected_statuses(scenario, requests, non2xx)
    p99 = _WRK_P99.search(output)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)] if p99 else 0
    return Measurement(server.name, scenario.name, requests / seconds, p99_ms,
                       cpu * 1e6 / max(requests, 1), errors, bad_status)


# ---------------------------------------------------------------- h2load
_H2_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s")
_H2_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, "
                          r"(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout")
_H2_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def run_h2load(server: RunningServer, scenario: Scenario, seconds: float) -> Measurement:
    """HTTP/2 over TLS (h2 by ALPN): `scenario.connections` connections, 10 streams at
    once on each, a fixed count of requests (H2_REQUESTS_PER_SECOND x --seconds).
    h2load reports no percentiles: p99 is left at 0."""
    requests = max(1000, int(H2_REQUESTS_PER_SECOND * seconds))
    command = ["h2load", f"-n{requests}", f"-c{scenario.connections}", "-m10",
               f"-t{scenario.threads}", *[f"-H{header}" for header in scenario.headers],
               url(server, scenario)]
    cpu_before = server.cpu_seconds()
    output = subprocess.run(command, capture_output=True, text=True,
                            timeout=seconds * 20 + 60).stdout
    cpu = server.cpu_seconds() - cpu_before
    finished = _H2_FINISHED.search(output)
    counts = _H2_REQUESTS.search(output)
    statuses = _H2_STATUS.search(output)
    if not (finished and counts and statuses):
        raise RuntimeError(f"h2load against {server.name}: {output[-2000:]}")
    total, _started, done, succeeded, failed, errored, timeout = map(int, counts.groups())
    good = int(statuses.group(1)) + int(statuses.group(2))
    return Measurement(server.name, scenario.name, float(finished.group(3)), 0.0,
                       cpu * 1e6 / max(done, 1), failed + errored + timeout + total - done,
                       succeeded - good if scenario.expect_status < 400 else 0)


# ---------------------------------------------------------------- uploads
class PeakRss:
    """`with PeakRss(measure) as rss:` calls `measure()` (an RSS in bytes) every
    `every` seconds in a thread; `rss.before`, `rss.peak` and `rss.samples` after the
    block."""

    def __init__(self, measure: Callable[[], int],
                 every: float = RSS_SAMPLE_SECONDS) -> None:
        self.measure = measure
        self.every = every
        self.before = self.peak = measure()
        self.samples = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.measure())
            self.samples += 1


def upload_once(port: int, path: str, body: Path) -> tuple[int, bytes]:
    """POST the file (its length announced, on a new connection): (status, answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=UPLOAD_TIMEOUT,
                                            blocksize=1 << 20)
    try:
        with body.open("rb") as file:
            connection.request("POST", path, body=file, headers={
                "Content-Length": str(body.stat().st_size),
                "Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def run_uploads(server: RunningServer, scenario: Scenario, seconds: float, body: Path
                ) -> Measurement:
    """Uploads one after another for `seconds` (at least one), each checked: the backend
    answers with the number of body bytes it got."""
    size = body.stat().st_size
    expected = b"%d\n" % size
    uploads = errors = bad_status = 0
    slowest = 0.0
    cpu_before = server.cpu_seconds()
    start = time.monotonic()
    with PeakRss(lambda: server.memory("rss")) as rss:
        while uploads == 0 or time.monotonic() - start < seconds:
            began = time.monotonic()
            uploads += 1
            try:
                status, answer = upload_once(server.port, scenario.path, body)
            except (OSError, http.client.HTTPException):
                errors += 1
                continue
            bad_status += status != 200 or answer != expected
            slowest = max(slowest, time.monotonic() - began)
    elapsed = time.monotonic() - start
    cpu = server.cpu_seconds() - cpu_before
    return Measurement(server.name, scenario.name, uploads / elapsed, slowest * 1000,
                       cpu * 1e6 / uploads, errors, bad_status,
                       megabytes_per_second=size * uploads / elapsed / 1e6,
                       peak_rss_bytes=rss.peak, rss_growth_bytes=rss.peak - rss.before)


def make_upload_body(base: Path, mebibytes: int) -> Path:
    path = base / UPLOAD_FILE
    with path.open("wb") as file:
        for _ in range(mebibytes):
            file.write(os.urandom(1 << 20))
    return path


# -------------------------------------------------------- special scenarios
def idle_connections(server: RunningServer, count: int) -> dict:
    """Hold `count` keep-alive connections, each after one request; RSS per connection."""
    before = server.memory("rss")
    clients, answered = [], 0
    request = b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n"
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(request)
            clients.append(sock)
        for sock in clients:
            if sock.recv(16).startswith(b"HTTP/1.1 200"):
                answered += 1
        time.sleep(1.0)
        after = server.memory("rss")
    finally:
        for sock in clients:
            sock.close()
    return {"connections": count, "answered": answered,
            "rss_bytes_per_connection": (after - before) / count}


def reload_under_load(server: RunningServer, seconds: float, base: Path,
                      pairs: int = 3) -> dict:
    """Throughput while a reload happens every second, against the same without.

    Quiet and reloading windows alternate, `pairs` of each, and the dip compares their
    totals: on a 2-core machine that wrk shares, req/s drifts by ±20 % from one window
    to the next, and alternating makes the drift fall on both sides alike.  The CPU
    time per request is compared too: what the reloads cost the server itself.
    """
    scenario = SCENARIOS[0]
    quiet_requests = reload_requests = reloads = failed = 0
    quiet_cpu = reload_cpu = 0.0
    for _ in range(pairs):
        quiet = run_wrk(server, scenario, seconds, base)
        quiet_requests += quiet.requests_per_second * seconds
        quiet_cpu += quiet.cpu_us_per_request * quiet.requests_per_second * seconds
        cpu_before = server.cpu_seconds()
        requests, errors, count = _wrk_with_reloads(server, scenario, seconds)
        reload_cpu += (server.cpu_seconds() - cpu_before) * 1e6
        reload_requests += requests
        reloads += count
        failed += errors
    quiet_rps = quiet_requests / (pairs * seconds)
    during_rps = reload_requests / (pairs * seconds)
    return {"reloads": reloads, "rps_quiet": quiet_rps, "rps_during_reloads": during_rps,
            "dip_percent": 100 * (1 - during_rps / quiet_rps),
            "cpu_us_quiet": quiet_cpu / max(quiet_requests, 1),
            "cpu_us_during_reloads": reload_cpu / max(reload_requests, 1),
            "failed": failed}


def _wrk_with_reloads(server: RunningServer, scenario: Scenario, seconds: float
                      ) -> tuple[int, int, int]:
    """wrk for `seconds` with a reload every second: (requests, failed, reloads)."""
    stop_at = time.monotonic() + seconds
    command = ["wrk", "-t2", "-c50", f"-d{seconds:g}s", "--timeout", "10s",
               f"http://127.0.0.1:{server.port}{scenario.path}"]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    reloads = 0
    while time.monotonic() < stop_at - 0.5:
        time.sleep(1.0)
        server.reload()
        reloads += 1
    requests, errors, non2xx = wrk_counts(wrk.communicate(timeout=seconds + 60)[0])
    return requests, errors + non2xx, reloads


# ------------------------------------------------------------------- main
def ratio(value: float, reference: float) -> float:
    return value / reference if reference else float("nan")


def summarise(report: Report) -> dict:
    summary: dict = {}
    for measurement in report.rounds:
        entry = summary.setdefault(measurement.scenario, {}).setdefault(
            measurement.server, {"rps": [], "p99_ms": [], "cpu_us": [], "errors": 0})
        entry["rps"].append(measurement.requests_per_second)
        entry["p99_ms"].append(measurement.p99_ms)
        entry["cpu_us"].append(measurement.cpu_us_per_request)
        entry["errors"] += measurement.errors + measurement.bad_status
        if measurement.megabytes_per_second:
            entry.setdefault("mb_per_second", []).append(measurement.megabytes_per_second)
            entry["peak_rss_bytes"] = max(entry.get("peak_rss_bytes", 0),
                                          measurement.peak_rss_bytes)
            entry["rss_growth_bytes"] = max(entry.get("rss_growth_bytes", 0),
                                            measurement.rss_growth_bytes)
    for scenario in summary.values():
        for entry in scenario.values():
            entry["rps_median"] = statistics.median(entry["rps"])
            entry["rps_min"], entry["rps_max"] = min(entry["rps"]), max(entry["rps"])
            entry["p99_ms_median"] = statistics.median(entry["p99_ms"])
            entry["cpu_us_median"] = statistics.median(entry["cpu_us"])
            if "mb_per_second" in entry:
                entry["mb_per_second_median"] = statistics.median(entry["mb_per_second"])
        reference = scenario.get("lighttpd")
        for entry in scenario.values():
            if reference:
                entry["rps_ratio_to_lighttpd"] = ratio(entry["rps_median"],
                                                       reference["rps_median"])
                entry["cpu_ratio_to_lighttpd"] = ratio(entry["cpu_us_median"],
                                                       reference["cpu_us_median"])
    return summary


def print_table(summary: dict, extra: dict) -> None:
    print(f"{'scenario':26} {'server':11} {'req/s':>9} {'min':>9} {'max':>9} "
          f"{'p99 ms':>8} {'cpu us/req':>10} {'x lighttpd':>10} {'cpu x l':>7} "
          f"{'errors':>6}")
    for scenario, servers in summary.items():
        for server, entry in servers.items():
            print(f"{scenario:26} {server:11} {entry['rps_median']:9.0f} "
                  f"{entry['rps_min']:9.0f} {entry['rps_max']:9.0f} "
                  f"{entry['p99_ms_median']:8.2f} {entry['cpu_us_median']:10.1f} "
                  f"{entry.get('rps_ratio_to_lighttpd', float('nan')):10.2f} "
                  f"{entry.get('cpu_ratio_to_lighttpd', float('nan')):7.2f} "
                  f"{entry['errors']:6}")
    print_uploads(summary, extra.get("upload_mib"))
    for name, values in extra.items():
        print(f"{name}: {json.dumps(values)}")


def print_uploads(summary: dict, mebibytes: int | None) -> None:
    """The upload rows' own figures (their req/s are uploads a second, p99 the slowest)."""
    for scenario, servers in summary.items():
        if not any("mb_per_second_median" in entry for entry in servers.values()):
            continue
        print(f"\n{scenario}, {mebibytes} MiB a request:\n"
              f"{'server':11} {'MB/s':>8} {'peak RSS MiB':>12} {'growth MiB':>10}")
        for server, entry in servers.items():
            print(f"{server:11} {entry['mb_per_second_median']:8.1f} "
                  f"{entry['peak_rss_bytes'] / 2**20:12.1f} "
                  f"{entry['rss_growth_bytes'] / 2**20:10.1f}")


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--only", default="", help="comma-separated scenario names: "
                        + ",".join([s.name for s in SCENARIOS] + list(SPECIALS)))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--accesslog", action="store_true", help="access logs on")
    parser.add_argument("--idle-connections", type=int, default=10000)
    parser.add_argument("--upload-mib", type=int, default=100, help="size of an upload")
    parser.add_argument("--files", type=int, default=FILES,
                        help="files of 2-12 KiB the production-traffic rows pick from")
    parser.add_argument("--json", default="", help="write the results here too")
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.seconds, options.idle_connections = 1, 2.0, 1000
    known = {s.name for s in SCENARIOS} | set(SPECIALS)
    options.only = set(options.only.split(",")) if options.only else known
    if options.only - known:
        parser.error(f"unknown scenarios: {', '.join(sorted(options.only - known))}")
    return options


def run_rounds(options: argparse.Namespace, wanted: list[Scenario], servers: list[str],
               running: dict[str, dict[str, RunningServer]], base: Path,
               report: Report) -> None:
    """Every scenario against each of its servers in turn, the order rotating."""
    upload_body = None
    if any(scenario.client == UPLOAD for scenario in wanted):
        upload_body = make_upload_body(base, options.upload_mib)
        report.extra["upload_mib"] = options.upload_mib
    for round_number in range(options.rounds):
        for scenario in wanted:
            names = [name for name in servers if name in scenario.servers]
            shift = round_number % len(names) if names else 0
            for name in names[shift:] + names[:shift]:
                server = running[scenario.setup][name]
                if scenario.client == UPLOAD:
                    assert upload_body is not None
                    measurement = run_uploads(server, scenario, options.seconds, upload_body)
                elif scenario.client == H2LOAD:
                    measurement = run_h2load(server, scenario, options.seconds)
                else:
                    measurement = run_wrk(server, scenario, options.seconds, base,
                                          options.files)
                report.rounds.append(measurement)


def run_specials(options: argparse.Namespace, static: dict[str, RunningServer],
                 base: Path, report: Report) -> None:
    if "idle" in options.only:
        report.extra["idle_keepalive"] = {
            name: idle_connections(server, options.idle_connections)
            for name, server in static.items()}
    if "reload" in options.only:
        report.extra["reload_every_second"] = {
            name: reload_under_load(server, max(options.seconds, 5), base)
            for name, server in static.items()}


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    servers = options.servers.split(",")
    wanted = [s for s in SCENARIOS if s.name in options.only]
    specials = [Scenario(name, "/1k.bin") for name in options.only & set(SPECIALS)]
    missing = sorted({need for scenario in wanted + specials
                      for need in missing_programs(scenario, servers)})
    if missing:
        print(f"missing tools: {', '.join(missing)} (see loadtests/README.md)",
              file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the idle scenario needs fds
    setups = {s.setup for s in wanted} | ({STATIC} if specials else set())
    report = Report(extra={"machine": machine()})
    with tempfile.TemporaryDirectory(prefix="pylighttpd-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        base = Path(tmp)
        docroot = make_docroot(base)
        if any(SETUPS[setup].file_set for setup in setups):
            make_file_set(docroot, options.files)
        running = {setup: start_servers(setup, servers, docroot, base, options.accesslog,
                                        stack)
                   for setup in SETUPS if setup in setups}
        if "footprint" in options.only:
            time.sleep(1)   # fresh and idle: before any scenario grows the processes
            report.extra["idle_pss_bytes"] = {name: server.memory("pss")
                                              for name, server in running[STATIC].items()}
        run_rounds(options, wanted, servers, running, base, report)
        run_specials(options, running.get(STATIC, {}), base, report)
    summary = summarise(report)
    print_table(summary, report.extra)
    if options.json:
        Path(options.json).write_text(json.dumps(
            {"summary": summary, "extra": report.extra,
             "rounds": [asdict(m) for m in report.rounds]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
