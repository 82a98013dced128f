"""TLS (mod_openssl): the real server with certificates made by `openssl`, spoken to by
curl, `openssl s_client` and Python's ssl module, on 127.0.0.1."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from procutil import REPO
from serverproc import Server, free_port, serving, wait_until
from worker.modules.mod_openssl import Stapling

pytestmark = pytest.mark.skipif(not shutil.which("openssl") or not shutil.which("curl"),
                                reason="needs the openssl and curl programs")

CGI_ENV = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
env | grep -E '^(HTTPS|REQUEST_SCHEME|SSL_[A-Z_]+|REMOTE_USER|AUTH_TYPE)=' | sort
"""


def make_certificate(base: Path, name: str, issuer: tuple[Path, Path] | None = None,
                     days: int = 30) -> tuple[Path, Path]:
    """A certificate and key for `name` (self-signed, or signed by `issuer`)."""
    crt, key = base / f"{name}.crt", base / f"{name}.key"
    subject = ["-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"]
    if issuer is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", crt, "-days", str(days), *subject],
                       check=True, capture_output=True)
    else:
        csr = base / f"{name}.csr"
        subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", csr, "-subj", f"/CN={name}"],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", issuer[0],
                        "-CAkey", issuer[1], "-CAcreateserial", "-out", crt,
                        "-days", str(days)], check=True, capture_output=True)
    return crt, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("certs")
    for name in ("a.example", "b.example"):
        crt, key = make_certificate(base, name)
        (base / f"{name}.pem").write_bytes(crt.read_bytes() + key.read_bytes())
    ca = make_certificate(base, "Test CA")
    make_certificate(base, "alice", issuer=ca)
    return base


def tls_config(certs: Path, port: int, extra: str = "") -> str:
    return (f'server.modules = ("mod_openssl", "mod_cgi", "mod_access", "mod_indexfile",'
            f' "mod_staticfile")\n'
            f'$SERVER["socket"] == "127.0.0.1:{port}" {{\n'
            f'  ssl.engine = "enable"\n  ssl.pemfile = "{certs}/a.example.pem"\n{extra}}}\n'
            f'$HTTP["host"] == "b.example" {{ ssl.pemfile = "{certs}/b.example.pem" }}\n'
            f'$HTTP["scheme"] == "http" {{ url.access-deny = ("secret.txt") }}\n'
            f'cgi.assign = (".sh" => "")\n')


def curl(port: int, path: str = "/", host: str = "a.example", *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sk", "--max-time", "10", "--resolve", f"{host}:{port}:127.0.0.1",
         *args, f"https://{host}:{port}{path}"], capture_output=True, text=True, timeout=20)


def served_name(port: int, servername: str, *args: str) -> str:
    """The CN of the certificate the server presents for `servername`."""
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                          "-servername", servername, *args], input="", capture_output=True,
                         text=True, timeout=20).stdout
    for line in out.splitlines():
        if line.startswith("subject="):
            return line.split("CN", 1)[1].strip(" =")
    return ""


@pytest.fixture
def tls_server(tmp_path, certs):
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "secret.txt").write_text("only over https\n")
    (tmp_path / "www" / "big.bin").write_bytes(os.urandom(1 << 20) * 8)
    env_script = tmp_path / "www" / "env.sh"
    env_script.write_text(CGI_ENV)
    env_script.chmod(0o755)
    with serving(tmp_path, tls_config(certs, port)) as running:
        running.tls_port = port
        yield running


def test_https_serves_and_plain_http_on_the_tls_port_is_refused(tls_server):
    result = curl(tls_server.tls_port, "/", "a.example", "-w", " %{http_code}")
    assert result.stdout == "hello from pylighttpd\n 200"
    with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            assert b"HTTP/" not in sock.recv(4096)   # no HTTP answer over a TLS socket
        except ConnectionResetError:
            pass                                      # closed with the request unread
    assert curl(tls_server.tls_port).stdout == "hello from pylighttpd\n"   # still serving


def test_sni_picks_the_certificate_of_the_host_block(tls_server):
    assert served_name(tls_server.tls_port, "b.example") == "b.example"
    assert served_name(tls_server.tls_port, "a.example") == "a.example"
    assert served_name(tls_server.tls_port, "unknown.example") == "a.example"


def test_the_scheme_condition_and_backends_see_https(tls_server):
    assert curl(tls_server.tls_port, "/secret.txt").stdout == "only over https\n"
    status = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             f"http://127.0.0.1:{tls_server.port}/secret.txt"],
                            capture_output=True, text=True, timeout=20).stdout
    assert status == "403"
    env = dict(line.split("=", 1) for line in
               curl(tls_server.tls_port, "/env.sh").stdout.splitlines())
    assert env["HTTPS"] == "on" and env["REQUEST_SCHEME"] == "https"
    assert env["SSL_PROTOCOL"] == "TLSv1.3" and env["SSL_CIPHER"]
    assert "SSL_CLIENT_VERIFY" not in env


def _alpn(port: int, offered: list[str]) -> str | None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(offered)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="a.example") as tls:
            return tls.selected_alpn_protocol()


def test_alpn_prefers_h2_and_tls_below_12_is_refused(tls_server):
    assert _alpn(tls_server.tls_port, ["h2", "http/1.1"]) == "h2"
    assert _alpn(tls_server.tls_port, ["http/1.1"]) == "http/1.1"
    assert _alpn(tls_server.tls_port, ["spdy/3"]) is None
    old = subprocess.run(["openssl", "s_client", "-connect",
                          f"127.0.0.1:{tls_server.tls_port}", "-tls1_1"], input="",
                         capture_output=True, text=True, timeout=20)
    assert "Cipher is (NONE)" in old.stdout or old.returncode != 0


def test_a_large_file_arrives_whole_over_tls(tls_server, tmp_path):
    out = tmp_path / "got.bin"
    result = curl(tls_server.tls_port, "/big.bin", "a.example", "-o", str(out),
                  "-w", "%{http_code}")
    assert result.stdout == "200"
    assert out.read_bytes() == (tls_server.docroot / "big.bin").read_bytes()


def test_a_session_resumes_on_whichever_worker_takes_it(tls_server, tmp_path):
    session = tmp_path / "session.pem"
    first = subprocess.run(["openssl", "s_client", "-connect",
                            f"127.0.0.1:{tls_server.tls_port}", "-tls1_2",
                            "-sess_out", str(session)], input="", capture_output=True,
                           text=True, timeout=20).stdout
    assert "New, TLSv1.2" in first
    reused = [subprocess.run(["openssl", "s_client", "-connect",
                              f"127.0.0.1:{tls_server.tls_port}", "-tls1_2",
                              "-sess_in", str(session)], input="", capture_output=True,
                             text=True, timeout=20).stdout for _ in range(8)]
    assert all("Reused, TLSv1.2" in out for out in reused)   # 2 workers: both took some


def _resumes(port: int, session: Path, save: bool = False) -> bool:
    """A TLS 1.2 handshake offering `session` (or saving a new one): resumed?"""
    flag = "-sess_out" if save else "-sess_in"
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                          "-tls1_2", flag, str(session)], input="", capture_output=True,
                         text=True, timeout=20).stdout
    return "Reused, TLSv1.2" in out


def test_a_reload_rotates_the_ticket_keys(tls_server, tmp_path):
    """What the daily timer in contrib/systemd relies on: tickets issued before a
    reload do not resume after it, new ones resume again."""
    port, session = tls_server.tls_port, tmp_path / "session.pem"
    assert not _resumes(port, session, save=True)
    assert _resumes(port, session)
    before = set(tls_server.children())
    tls_server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: not before & set(tls_server.children()), timeout=30)
    assert not _resumes(port, session)
    assert not _resumes(port, session, save=True) and _resumes(port, session)


def test_a_reload_serves_a_renewed_certificate(tmp_path, certs):
    port = free_port()
    pem = tmp_path / "site.pem"
    pem.write_bytes((certs / "a.example.pem").read_bytes())
    config = tls_config(certs, port).replace(f"{certs}/a.example.pem", str(pem))
    with serving(tmp_path, config) as running:
        assert served_name(port, "a.example") == "a.example"
        pem.write_bytes((certs / "a.example.crt").read_bytes()          # a broken renewal:
                        + (certs / "b.example.key").read_bytes())       # refused, old serves
        running.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "does not match" in running.errorlog.read_text(), timeout=20)
        assert served_name(port, "a.example") == "a.example"
        pem.write_bytes((certs / "b.example.pem").read_bytes())
        running.process.send_signal(signal.SIGHUP)
        wait_until(lambda: served_name(port, "a.example") == "b.example", timeout=20)


LOADED_AFTER_START = (
    "import sys\n"
    "from master.configload import load\n"
    "from worker.server import Server\n"
    "Server(load(sys.argv[1]), [])\n"
    "print('worker.h2' in sys.modules)\n")


def _http2_loaded_at_start(tmp_path: Path, config: str) -> bool:
    """Whether a config's loading (in the master) and a worker's Server bring in the
    HTTP/2 stack before any connection speaks HTTP/2."""
    conf = tmp_path / "h2.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.port = {free_port()}\n'
                    + config)
    result = subprocess.run([sys.executable, "-c", LOADED_AFTER_START, str(conf)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "True"


def test_the_http2_stack_is_loaded_where_it_can_be_used(tmp_path, certs):
    """Plain HTTP: not until a connection speaks HTTP/2 (about 0.7 MB a process
    spared); TLS offering h2 by ALPN: in the master, shared with the workers."""
    assert not _http2_loaded_at_start(tmp_path, "")
    tls = tls_config(certs, free_port())
    assert _http2_loaded_at_start(tmp_path, tls)
    no_h2 = tls + 'server.feature-flags = ("server.h2proto" => "disable")\n'
    assert not _http2_loaded_at_start(tmp_path, no_h2)


def test_a_key_that_does_not_match_is_a_config_error_with_its_place(tmp_path, certs):
    port = free_port()
    mismatched = tmp_path / "mismatched.pem"
    mismatched.write_bytes((certs / "a.example.crt").read_bytes()
                           + (certs / "b.example.key").read_bytes())
    server = Server(tmp_path, tls_config(certs, port).replace(
        f"{certs}/a.example.pem", str(mismatched)), flags=("-tt",))
    assert server.process.wait(timeout=30) != 0
    said = server.process.stderr.read()
    assert "does not match the certificate" in said and "server.conf:9:" in said


def test_an_unsupported_ssl_conf_command_is_refused(tmp_path, certs):
    port = free_port()
    extra = '  ssl.openssl.ssl-conf-cmd = ("NoSuchCommand" => "x")\n'
    server = Server(tmp_path, tls_config(certs, port, extra), flags=("-tt",))
    assert server.process.wait(timeout=30) != 0
    assert '"NoSuchCommand" is not supported' in server.process.stderr.read()


def test_min_protocol_from_ssl_conf_cmd(tmp_path, certs):
    port = free_port()
    extra = '  ssl.openssl.ssl-conf-cmd = ("MinProtocol" => "TLSv1.3")\n'
    with serving(tmp_path, tls_config(certs, port, extra)):
        assert curl(port, "/", "a.example", "--tls-max", "1.2").returncode != 0
        assert curl(port).stdout == "hello from pylighttpd\n"


def test_client_certificates_are_verified_and_reach_backends(tmp_path, certs):
    port = free_port()
    extra = (f'  ssl.ca-file = "{certs}/Test CA.crt"\n'
             '  ssl.verifyclient.activate = "enable"\n'
             '  ssl.verifyclient.username = "SSL_CLIENT_S_DN_CN"\n')
    (tmp_path / "www").mkdir()
    script = tmp_path / "www" / "env.sh"
    script.write_text(CGI_ENV)
    script.chmod(0o755)
    with serving(tmp_path, tls_config(certs, port, extra)):
        assert curl(port).returncode != 0                 # enforced: no certificate, no TLS
        with_cert = curl(port, "/env.sh", "a.example", "--cert", str(certs / "alice.crt"),
                         "--key", str(certs / "alice.key"))
        env = dict(line.split("=", 1) for line in with_cert.stdout.splitlines())
        assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert env["SSL_CLIENT_S_DN_CN"] == "alice"
        assert env["REMOTE_USER"] == "alice" and env["AUTH_TYPE"] == "SSL_CLIENT_VERIFY"
        stranger = curl(port, "/env.sh", "a.example", "--cert", str(certs / "b.example.crt"),
                        "--key", str(certs / "b.example.key"))
        assert stranger.returncode != 0                   # not signed by the CA


def test_garbage_and_abandoned_handshakes_do_not_hurt_the_worker(tls_server):
    for payload in (b"\x16\x03\x01\x00\x05hello", os.urandom(300), b"\x16\x03\x03" * 200):
        with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(5)
            try:
                while sock.recv(4096):
                    pass
            except (ConnectionResetError, socket.timeout):
                pass
    half = [socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=5)
            for _ in range(20)]
    time.sleep(0.2)
    assert curl(tls_server.tls_port).stdout == "hello from pylighttpd\n"
    for sock in half:
        sock.close()
    assert "Traceback" not in tls_server.errorlog.read_text()



# ------------------------------------------------------------- shipped snippet
DEBIAN_SSL = Path("/etc/lighttpd/conf-available/10-ssl.conf")


@pytest.mark.skipif(not DEBIAN_SSL.exists(), reason="Debian's lighttpd-mod-openssl "
                    "(its 10-ssl.conf) is not installed")
def test_debian_s_snippet_runs_unchanged_with_a_certificate_in_place(tmp_path, certs):
    """Its own text, with only its port (443, taken by root's servers) made free;
    ssl.pemfile pointed at a certificate by `:=` after it, as a site would."""
    port = free_port()
    snippet = tmp_path / "10-ssl.conf"
    snippet.write_text(DEBIAN_SSL.read_text().replace("443", str(port)))
    extra = (f'include "{snippet}"\n'
             f'ssl.pemfile := "{certs}/a.example.pem"\n')
    checked = Server(tmp_path, extra, flags=("-tt",))
    assert (checked.process.wait(timeout=30), checked.process.stderr.read()) == (0, "")
    with serving(tmp_path, extra):
        assert curl(port).stdout == "hello from pylighttpd\n"


# ------------------------------------------------------- protocol defaults
def _handshake(port: int, *args: str) -> str:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                           "-servername", "a.example", *args], input="",
                          capture_output=True, text=True, timeout=20).stdout


def _negotiated(port: int, *args: str) -> bool:
    out = _handshake(port, *args)
    return "Cipher is (NONE)" not in out and "Server certificate" in out


def test_defaults_are_mozilla_intermediate_ciphers_and_curves(tls_server):
    port = tls_server.tls_port
    assert _negotiated(port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    for weak in ("ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256", "ECDHE-RSA-AES256-SHA384"):
        assert not _negotiated(port, "-tls1_2", "-cipher", weak), weak
    for group in ("X25519", "P-256", "P-384"):
        assert _negotiated(port, "-groups", group), group
    for group in ("P-521", "X448", "ffdhe2048"):
        assert not _negotiated(port, "-groups", group), group


def test_curves_from_ssl_conf_cmd_take_a_list(tmp_path, certs):
    port = free_port()
    extra = '  ssl.openssl.ssl-conf-cmd = ("Curves" => "P-521:X448")\n'
    with serving(tmp_path, tls_config(certs, port, extra)):
        assert _negotiated(port, "-groups", "P-521")
        assert _negotiated(port, "-groups", "X448")
        assert not _negotiated(port, "-groups", "X25519")


def test_a_missing_certificate_file_is_named(tmp_path, certs):
    port = free_port()
    server = Server(tmp_path, tls_config(certs, port).replace(
        f"{certs}/a.example.pem", f"{tmp_path}/none.pem"), flags=("-tt",))
    assert server.process.wait(timeout=30) != 0
    assert f"No such file or directory: '{tmp_path}/none.pem'" in server.process.stderr.read()


# ----------------------------------------------------------------- OCSP stapling
def _ocsp_response(base: Path, ca: tuple[Path, Path], leaf: Path, status: str) -> bytes:
    """What `openssl ocsp` answers for `leaf` when the CA's index says `status`
    ("V" valid, "R" revoked)."""
    serial = subprocess.run(["openssl", "x509", "-in", leaf, "-noout", "-serial"],
                            capture_output=True, text=True, check=True).stdout
    serial = serial.strip().split("=", 1)[1]
    revoked = "240101000000Z" if status == "R" else ""
    (base / "index.txt").write_text(
        f"{status}\t351231000000Z\t{revoked}\t{serial}\tunknown\t/CN=ocsp.example\n")
    request, response = base / "request.der", base / "response.der"
    subprocess.run(["openssl", "ocsp", "-issuer", ca[0], "-cert", leaf, "-no_nonce",
                    "-reqout", request], check=True, capture_output=True)
    subprocess.run(["openssl", "ocsp", "-index", base / "index.txt", "-rsigner", ca[0],
                    "-rkey", ca[1], "-CA", ca[0], "-reqin", request, "-respout", response,
                    "-ndays", "1"], check=True, capture_output=True)
    return response.read_bytes()


def _stapled_status(port: int) -> str:
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                          "-servername", "ocsp.example", "-status"], input="",
                         capture_output=True, text=True, timeout=20).stdout
    if "OCSP response: no response sent" in out:
        return "none"
    for line in out.splitlines():
        if "Cert Status:" in line:
            return line.split(":", 1)[1].strip()
    return "?"


def test_an_ocsp_response_is_stapled_and_renewed_without_a_reload(tmp_path, certs):
    ca = (certs / "Test CA.crt", certs / "Test CA.key")
    base = tmp_path / "ocsp"
    base.mkdir()
    leaf, key = make_certificate(base, "ocsp.example", issuer=ca)
    (base / "site.pem").write_bytes(leaf.read_bytes() + key.read_bytes())
    stapled = base / "stapling.der"
    stapled.write_bytes(_ocsp_response(base, ca, leaf, "V"))
    port = free_port()
    config = tls_config(certs, port).replace(f"{certs}/a.example.pem", f"{base}/site.pem")
    extra = f'ssl.stapling-file = "{stapled}"\n'
    with serving(tmp_path, config.replace("}\n", extra + "}\n", 1)):
        assert _stapled_status(port) == "good"
        revoked = _ocsp_response(base, ca, leaf, "R")
        (base / "next.der").write_bytes(revoked)
        os.replace(base / "next.der", stapled)          # renewed as certbot renews
        wait_until(lambda: _stapled_status(port) == "revoked", timeout=10)
        stapled.write_bytes(b"not an OCSP response")
        wait_until(lambda: "ssl.stapling-file" in tls_error_log(tmp_path), timeout=10)
        assert _stapled_status(port) == "revoked"      # the last good one stays


def test_an_ocsp_response_past_its_next_update_is_not_stapled(tmp_path, certs):
    ca = (certs / "Test CA.crt", certs / "Test CA.key")
    leaf, _ = make_certificate(tmp_path, "expiring.example", issuer=ca)
    path = tmp_path / "stapling.der"
    path.write_bytes(_ocsp_response(tmp_path, ca, leaf, "V"))
    stapling = Stapling(str(path))
    assert stapling.staple(None, None) == path.read_bytes()
    assert stapling.expires is not None and stapling.expires > time.time() + 3600
    stapling.expires = time.time() - 1
    assert stapling.staple(None, None) == b""


def tls_error_log(tmp_path: Path) -> str:
    return (tmp_path / "error.log").read_text()


def test_a_stapling_file_that_is_no_ocsp_response_is_a_config_error(tmp_path, certs):
    port = free_port()
    bad = tmp_path / "bad.der"
    bad.write_bytes(b"nonsense")
    extra = f'  ssl.stapling-file = "{bad}"\n'
    server = Server(tmp_path, tls_config(certs, port, extra), flags=("-tt",))
    assert server.process.wait(timeout=30) != 0
    assert "mod_openssl" in server.process.stderr.read()


# --------------------------------------------------------------- acme-tls/1
def test_acme_tls_1_answers_with_the_challenge_certificate_of_the_name(tmp_path, certs):
    acme = tmp_path / "acme"
    acme.mkdir()
    crt, key = make_certificate(acme, "challenge.example")
    crt.rename(acme / "challenge.example.crt.pem")
    key.rename(acme / "challenge.example.key.pem")
    port = free_port()
    with serving(tmp_path, tls_config(certs, port, f'  ssl.acme-tls-1 = "{acme}"\n')):
        out = _acme_handshake(port, "challenge.example")
        assert "ALPN protocol: acme-tls/1" in out and "CN = challenge.example" in out
        assert "(still open)" not in out
        assert served_name(port, "challenge.example") == "a.example"   # no ALPN: the site
        refused = _acme_handshake(port, "other.example")     # no challenge for that name
        assert "alert" in refused and "(still open)" not in refused
        assert curl(port).stdout == "hello from pylighttpd\n"
    assert "Traceback" not in tls_error_log(tmp_path)


def _acme_handshake(port: int, name: str) -> str:
    """s_client offering acme-tls/1, its stdin left open: it ends only when the server
    closes the connection (the challenge carries no HTTP)."""
    with subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                           "-servername", name, "-alpn", "acme-tls/1"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as client:
        try:
            return _read_to_end(client.stdout, time.monotonic() + 10).decode()
        finally:
            client.kill()


def _read_to_end(stream, deadline: float) -> bytes:
    out = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = os.read(stream.fileno(), 65536)
        if not data:
            return out
        out += data
    return out + b"\n(still open)"
