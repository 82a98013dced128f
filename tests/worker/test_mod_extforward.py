"""mod_extforward against a real worker: the client a trusted proxy names becomes the
request's own (REMOTE_ADDR and HTTPS for a CGI script, `$HTTP["remoteip"]` conditions,
also after a rewrite, the access log); an untrusted peer is not believed; HAProxy's
PROXY protocol, hand-made (v1, v2, each family, in pieces, malformed, oversized, a
silent peer, TLS after it) and from a real HAProxy with send-proxy / send-proxy-v2 /
send-proxy-v2-ssl."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from held_backend import free_port
from proxy_backends import BackendProcess
from server_util import REPO, WorkerProcess, config_text, read_until_closed
from test_proxyproto import tcp4, tlv, v2

ENV_SCRIPT = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
env | grep -E '^(REMOTE_ADDR|REMOTE_PORT|HTTPS|REQUEST_SCHEME|REMOTE_USER|HTTP_HOST|SEEN\
|SSL_[A-Z_]*|PP2_UNIQUE_ID|AUTH_TYPE)=' | sort
"""
SITE_CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_rewrite", "mod_cgi", "mod_setenv", "mod_accesslog",
                  "mod_extforward")
server.max-read-idle = 2
server.errorlog = "{base}/error.log"
cgi.assign = (".sh" => "")
accesslog.filename = "{base}/access.log"
accesslog.format = "%h %r"
url.rewrite-once = ("^/again$" => "/env.sh")
extforward.forwarder = ("127.0.0.1" => "trust", "10.0.0.0/8" => "trust",
                        "[2001:db8::]/32" => "trust")
extforward.params = ("host" => 1, "remote_user" => "enable")
$HTTP["remoteip"] == "203.0.113.0/24" {{ setenv.add-environment = ("SEEN" => "doc-net") }}
$HTTP["url"] =^ "/realip/" {{ extforward.headers = ("X-Real-IP") }}
$HTTP["url"] =^ "/rfc/" {{ extforward.headers = ("Forwarded") }}
$HTTP["url"] =^ "/untrusted/" {{ extforward.forwarder = ("10.0.0.1" => "trust") }}
{extra}
"""
REQUEST = b"GET /env.sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def wait_until(predicate, timeout: float = 5.0) -> bool:
    """Poll `predicate` (a missing file counts as not yet) until true or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def make_site(base: Path, extra: str = "") -> Path:
    docroot = base / "www"
    for directory in (docroot, docroot / "realip", docroot / "rfc", docroot / "untrusted"):
        directory.mkdir(parents=True, exist_ok=True)
        script = directory / "env.sh"
        script.write_text(ENV_SCRIPT)
        script.chmod(0o755)
    conf = base / "extforward.conf"
    conf.write_text(SITE_CONFIG.format(docroot=docroot, base=base, extra=extra))
    return conf


def environment(answer: bytes) -> dict[str, str]:
    """What the CGI script printed, as a dict (with the status as "status")."""
    head, _, body = answer.partition(b"\r\n\r\n")
    found = dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)
    found["status"] = head.split(b" ")[1].decode() if head else ""
    return found


def get(port: int, path: str, *headers: str, source: str = "127.0.0.1") -> dict[str, str]:
    lines = [f"GET {path} HTTP/1.1", "Host: x", "Connection: close", *headers]
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return environment(read_until_closed(sock))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("extforward")
    with WorkerProcess(make_site(base)) as worker:
        yield worker.port, base


# ---------------------------------------------------------------- headers
def test_x_forwarded_for_chain(site):
    port, _ = site
    seen = get(port, "/env.sh", "X-Forwarded-For: 198.51.100.1, 203.0.113.9, 10.1.2.3",
               "X-Forwarded-Proto: https")
    assert seen["REMOTE_ADDR"] == "203.0.113.9"         # rightmost untrusted
    assert seen["HTTPS"] == "on" and seen["REQUEST_SCHEME"] == "https"
    assert seen["SEEN"] == "doc-net"                    # the condition saw the client


def test_no_header_changes_nothing(site):
    seen = get(site[0], "/env.sh")
    assert seen["REMOTE_ADDR"] == "127.0.0.1" and "SEEN" not in seen


def test_untrusted_peer_is_not_believed(site):
    seen = get(site[0], "/untrusted/env.sh", "X-Forwarded-For: 203.0.113.9")
    assert seen["REMOTE_ADDR"] == "127.0.0.1" and "SEEN" not in seen


def test_only_the_configured_header(site):
    port, _ = site
    seen = get(port, "/realip/env.sh", "X-Forwarded-For: 198.51.100.1",
               "X-Real-IP: 203.0.113.44")
    assert seen["REMOTE_ADDR"] == "203.0.113.44"
    assert get(port, "/rfc/env.sh", "X-Forwarded-For: 203.0.113.1")["REMOTE_ADDR"] == \
        "127.0.0.1"


def test_forwarded_ipv6_with_port_and_params(site):
    seen = get(site[0], "/rfc/env.sh",
               'Forwarded: for="[2001:db8:cafe::17]:4711";proto=https;host="B.example", '
               'for="[2001:db8::1]";remote_user="bob"')
    assert seen["REMOTE_ADDR"] == "2001:db8:cafe::17"
    assert seen["HTTPS"] == "on"
    assert seen["HTTP_HOST"] == "b.example"
    assert seen["REMOTE_USER"] == "bob"


@pytest.mark.parametrize("value", ['for="203.0.113.1', 'for="[2001:db8::1"',
                                   "for=203.0.113.1;host=\"bad host\""])
def test_forwarded_refused_with_400(site, value):
    assert get(site[0], "/rfc/env.sh", f"Forwarded: {value}")["status"] == "400"


def test_conditions_after_a_rewrite(site):
    seen = get(site[0], "/again", "X-Forwarded-For: 203.0.113.50")
    assert seen["REMOTE_ADDR"] == "203.0.113.50" and seen["SEEN"] == "doc-net"


def test_access_log_shows_the_client(site):
    port, base = site
    get(port, "/env.sh?logged", "X-Forwarded-For: 203.0.113.77")
    log = base / "access.log"
    assert wait_until(lambda: "203.0.113.77 GET /env.sh?logged" in log.read_text(), 5)


# ---------------------------------------------------------------- PROXY protocol
@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """A worker reading PROXY headers from 127.0.0.1 (not from 127.0.0.2)."""
    base = tmp_path_factory.mktemp("proxied")
    extra = ('extforward.hap-PROXY = "enable"\n'
             'extforward.hap-PROXY-ssl-client-verify = "enable"\n'
             '$HTTP["remoteip"] == "127.0.0.2" { extforward.forwarder = ("10.0.0.1" => '
             '"trust") }\n')
    with WorkerProcess(make_site(base, extra)) as worker:
        yield worker.port, base


def exchange(port: int, *pieces: bytes, source: str = "127.0.0.1") -> bytes:
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.02)
        return read_until_closed(sock)


@pytest.mark.parametrize("header,address,port", [
    (b"PROXY TCP4 203.0.113.3 127.0.0.1 4444 80\r\n", "203.0.113.3", "4444"),
    (b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n", "2001:db8::7", "5555"),
    (tcp4("203.0.113.4", 6666), "203.0.113.4", "6666"),
    (v2(1, 0x21, socket.inet_pton(socket.AF_INET6, "2001:db8::8") + bytes(16)
        + struct.pack("!HH", 7777, 80)), "2001:db8::8", "7777"),
])
def test_proxy_header_names_the_client(proxied, header, address, port):
    seen = environment(exchange(proxied[0], header + REQUEST))
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == (address, port)


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n", v2(0, 0x11, bytes(12)),
                                    v2(1, 0x00, b"")])
def test_proxy_header_without_address_keeps_the_peer(proxied, header):
    assert environment(exchange(proxied[0], header + REQUEST))["REMOTE_ADDR"] == "127.0.0.1"


def test_proxy_header_in_pieces(proxied):
    header = tcp4("203.0.113.5", 1234)
    seen = environment(exchange(proxied[0], header[:5], header[5:15], header[15:20],
                                header[20:] + REQUEST[:10], REQUEST[10:]))
    assert (seen["REMOTE_ADDR"], seen["SEEN"]) == ("203.0.113.5", "doc-net")


def test_proxy_ssl_facts_and_client_verify(proxied):
    facts = bytes([0x01 | 0x02]) + bytes(4) + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"alice")
    header = tcp4("203.0.113.6", 1, tlv(0x20, facts) + tlv(0x05, b"req-1"))
    seen = environment(exchange(proxied[0], header + REQUEST))
    assert seen["HTTPS"] == "on" and seen["SSL_PROTOCOL"] == "TLSv1.3"
    assert (seen["REMOTE_USER"], seen["AUTH_TYPE"], seen["SSL_CLIENT_VERIFY"]) == \
        ("alice", "SSL_CLIENT_VERIFY", "SUCCESS")
    assert seen["PP2_UNIQUE_ID"] == "req-1"


def test_every_request_of_the_connection(proxied):
    request = b"GET /env.sh HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = exchange(proxied[0], b"PROXY TCP4 203.0.113.8 127.0.0.1 1 80\r\n" + request,
                       request + b"GET /env.sh HTTP/1.1\r\nHost: x\r\nConnection: close"
                       b"\r\n\r\n")
    assert answers.count(b"REMOTE_ADDR=203.0.113.8") == 3
    assert b"SSL_CLIENT_VERIFY=NONE" in answers


@pytest.mark.parametrize("pieces", [
    (b"GET /env.sh HTTP/1.1\r\nHost: x\r\n\r\n",),                      # no header
    (b"PROXY TCP4 203.0.113.300 127.0.0.1 1 80\r\n" + REQUEST,),
    (b"PROXY TCP4 " + b"1" * 120 + b"\r\n",),                           # oversized v1
    (v2(1, 0x11, bytes(4000)),),                                        # oversized v2
    (b"PROXY TCP4 203.0.113.3",),                                       # cut, then EOF
])
def test_bad_header_closes_without_answer(proxied, pieces):
    assert exchange(proxied[0], *pieces) == b""


def test_bad_header_is_logged(proxied):
    port, base = proxied
    exchange(port, b"PROXY TCP9 x\r\n")
    log = base / "error.log"
    assert wait_until(lambda: "hap-PROXY proto received invalid/unsupported request from "
                              "127.0.0.1" in log.read_text(), 5)


def test_silent_peer_times_out(proxied):
    with socket.create_connection(("127.0.0.1", proxied[0]), timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 203")
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < 9         # closed by the read-idle limit


def test_untrusted_peer_header_is_http(proxied):
    answer = exchange(proxied[0], b"PROXY TCP4 203.0.113.3 127.0.0.1 1 80\r\n" + REQUEST,
                      source="127.0.0.2")
    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request")


# ---------------------------------------------------------------- TLS after PROXY
@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Path:
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl program")
    base = tmp_path_factory.mktemp("cert")
    key, crt = base / "key.pem", base / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    key, "-out", crt, "-days", "2", "-subj", "/CN=proxied.example"],
                   check=True, capture_output=True, timeout=60)
    pem = base / "server.pem"
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return pem


def _tls_behind_proxy(tmp_path, certificate) -> tuple[Path, ssl.SSLContext]:
    """A site taking a PROXY header, then TLS; a client context for it (unverified)."""
    conf = make_site(tmp_path, f'ssl.engine = "enable"\nssl.pemfile = "{certificate}"\n'
                               'extforward.hap-PROXY = "enable"\n')
    conf.write_text(conf.read_text().replace('server.modules = (',
                                             'server.modules = ("mod_openssl", '))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return conf, context


def test_tls_starts_after_the_header(tmp_path, certificate):
    conf, context = _tls_behind_proxy(tmp_path, certificate)
    with WorkerProcess(conf) as worker, \
            socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.10 127.0.0.1 2222 443\r\n")
        with context.wrap_socket(sock) as tls:
            tls.sendall(REQUEST)
            seen = environment(read_until_closed(tls))
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"], seen["HTTPS"]) == \
        ("203.0.113.10", "2222", "on")
    assert seen["SSL_PROTOCOL"].startswith("TLSv1")


def test_http2_by_alpn_after_the_header(tmp_path, certificate):
    """The protocol TLS agreed on behind a PROXY header is the connection's."""
    conf, context = _tls_behind_proxy(tmp_path, certificate)
    context.set_alpn_protocols(["h2"])
    with WorkerProcess(conf) as worker, \
            socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.10 127.0.0.1 2222 443\r\n")
        with context.wrap_socket(sock) as tls:
            assert tls.selected_alpn_protocol() == "h2"
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9)[:3] +
                        b"\x04" + bytes(5))          # the preface, an empty SETTINGS
            first = tls.recv(9)
    assert len(first) == 9 and first[3] == 0x04     # the server's SETTINGS frame


# ---------------------------------------------------------------- HAProxy in front
HAPROXY_CONFIG = """
global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend v1
    bind 127.0.0.1:{v1}
    default_backend v1
backend v1
    server ours 127.0.0.1:{ours} send-proxy
frontend v2
    bind 127.0.0.1:{v2}
    default_backend v2
backend v2
    server ours 127.0.0.1:{ours} send-proxy-v2
frontend tls
    bind 127.0.0.1:{tls} ssl crt {pem}
    default_backend tls
backend tls
    server ours 127.0.0.1:{ours} send-proxy-v2-ssl
"""


@pytest.fixture(scope="module")
def haproxy(proxied, certificate, tmp_path_factory):
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.skip("needs Debian's haproxy")
    base = tmp_path_factory.mktemp("haproxy")
    ports = {"v1": free_port(), "v2": free_port(), "tls": free_port()}
    conf = base / "haproxy.cfg"
    conf.write_text(HAPROXY_CONFIG.format(ours=proxied[0], pem=certificate, **ports))
    process = subprocess.Popen([binary, "-db", "-f", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        for port in ports.values():
            wait_until(lambda port=port: socket.create_connection(("127.0.0.1", port),
                                                                  timeout=1).close() or True)
        yield ports
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_haproxy_in_front(haproxy, proxied, kind):
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind(("127.0.0.2", 0))
        sock.connect(("127.0.0.1", haproxy[kind]))
        own_port = sock.getsockname()[1]
        sock.sendall(REQUEST.replace(b"/env.sh", f"/env.sh?{kind}".encode()))
        seen = environment(read_until_closed(sock))
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("127.0.0.2", str(own_port))
    log = proxied[1] / "access.log"
    assert wait_until(lambda: f"127.0.0.2 GET /env.sh?{kind}" in log.read_text(), 5)


def test_haproxy_terminating_tls(haproxy):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind(("127.0.0.2", 0))
        sock.connect(("127.0.0.1", haproxy["tls"]))
        with context.wrap_socket(sock) as tls:
            tls.sendall(REQUEST)
            seen = environment(read_until_closed(tls))
    assert (seen["REMOTE_ADDR"], seen["HTTPS"]) == ("127.0.0.2", "on")
    assert seen["SSL_PROTOCOL"].startswith("TLSv1")


# ---------------------------------------------------------------- mod_proxy behind
def test_mod_proxy_forwards_the_client(tmp_path):
    backend = BackendProcess("xf", tmp_path)
    try:
        conf = make_site(tmp_path, '$HTTP["url"] =^ "/app/" { proxy.server = ("" => '
                                   f'(("host" => "127.0.0.1", "port" => {backend.port}))) }}\n')
        conf.write_text(conf.read_text().replace('"mod_extforward")',
                                                 '"mod_extforward", "mod_proxy")'))
        with WorkerProcess(conf) as worker:
            status, _, body = worker.get("/app/echo", X_Forwarded_For="203.0.113.9")
    finally:
        backend.stop()
    headers = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert status == 200
    assert headers["x-forwarded-for"].rpartition(", ")[2] == "203.0.113.9"


def test_tls_module_after_it_is_warned_of(tmp_path):
    conf = tmp_path / "order.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.port = 8080\n'
                    'server.modules = ("mod_extforward", "mod_openssl")\n'
                    'extforward.forwarder = ("127.0.0.1" => "trust")\n'
                    '$SERVER["socket"] == ":8443" { extforward.hap-PROXY = "enable" }\n')
    checked = subprocess.run([sys.executable, "-m", "master.cli", "-tt", "-f", str(conf)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "mod_extforward must be loaded after mod_openssl in server.modules when " \
        'extforward.hap-PROXY = "enable"' in checked.stdout + checked.stderr


def test_kept_answers_are_not_replayed_to_a_forwarded_client(tmp_path):
    (tmp_path / "index.html").write_text("hello\n")
    conf = tmp_path / "cache.conf"
    conf.write_text(config_text(tmp_path, 'extforward.forwarder = ("127.0.0.1" => "trust")\n'
                                '$HTTP["remoteip"] == "203.0.113.0/24" '
                                '{ url.access-deny = (".html") }\n',
                                ("mod_access", "mod_extforward", "mod_staticfile")))
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    with WorkerProcess(conf) as worker:
        connection = worker.connection(10)
        statuses = []
        for headers in ({}, {}, {}, forwarded, forwarded, {}):
            connection.request("GET", "/index.html", headers=headers)
            answer = connection.getresponse()
            answer.read()
            statuses.append(answer.status)
        connection.close()
    assert statuses == [200, 200, 200, 403, 403, 200]
