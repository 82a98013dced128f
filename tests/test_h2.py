"""HTTP/2: the real server spoken to by curl (nghttp2) and by a client made of the h2
library over real sockets, in cleartext (prior knowledge) and over TLS (ALPN)."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from serverproc import free_port, serving
from test_tls import make_certificate

SLEEPY_CGI = "#!/bin/sh\nsleep 1\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslept\\n'\n"
ECHO_CGI = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nwc -c\n"


class Client:
    """A minimal HTTP/2 client: opens streams, reads events until told to stop."""

    def __init__(self, port: int, tls: bool = False, window: int | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            raw = context.wrap_socket(raw, server_hostname="a.example")
            assert raw.selected_alpn_protocol() == "h2"
        self.sock = raw
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        if window is not None:
            self.h2.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE:
                                             window})
        self.h2.initiate_connection()
        self.bodies: dict[int, bytes] = {}
        self.statuses: dict[int, str] = {}
        self.interim: dict[int, str] = {}     # a 1xx answer's status, by stream
        self.ended: list[int] = []           # stream ids in the order they ended
        self.resets: dict[int, int] = {}     # the error code of a stream the server reset
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.auto_window = window is None
        self.settings_seen = False
        self.send()
        self.run(lambda: self.settings_seen)            # the server's windows are known

    def send(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def get(self, path: str, method: str = "GET", body: bytes = b"") -> int:
        stream = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream, [(":method", method), (":path", path),
                                      (":scheme", "http"), (":authority", "127.0.0.1")],
                             end_stream=not body)
        for start in range(0, len(body), 16384):         # the default frame size
            self.h2.send_data(stream, body[start:start + 16384],
                              end_stream=start + 16384 >= len(body))
        self.send()
        return stream

    def run(self, done, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, f"ended so far: {self.ended}"
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(1 << 16)
            if not data:
                break
            for event in self.h2.receive_data(data):
                self._event(event)
            self.send()

    def _event(self, event) -> None:
        if isinstance(event, h2.events.InformationalResponseReceived):
            self.interim[event.stream_id] = dict(event.headers)[b":status"].decode()
        elif isinstance(event, h2.events.ResponseReceived):
            self.statuses[event.stream_id] = dict(event.headers)[b":status"].decode()
        elif isinstance(event, h2.events.DataReceived):
            self.bodies[event.stream_id] = self.bodies.get(event.stream_id, b"") + event.data
            if self.auto_window:
                self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                  event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.append(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.resets[event.stream_id] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_seen = True


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("h2certs")
    crt, key = make_certificate(base, "a.example")
    (base / "a.pem").write_bytes(crt.read_bytes() + key.read_bytes())
    return base


@pytest.fixture
def h2_server(tmp_path, certs):
    port = free_port()
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "big.bin").write_bytes(bytes(range(256)) * 16384)       # 4 MiB
    for n in range(20):
        (docroot / f"small{n}.txt").write_text(f"small {n}\n")
    for name, text in (("sleepy.sh", SLEEPY_CGI), ("echo.sh", ECHO_CGI)):
        (docroot / name).write_text(text)
        (docroot / name).chmod(0o755)
    config = (f'server.modules = ("mod_openssl", "mod_cgi", "mod_indexfile", '
              f'"mod_staticfile")\ncgi.assign = (".sh" => "")\n'
              f'server.max-request-size = 64\n'
              f'$SERVER["socket"] == "127.0.0.1:{port}" {{ ssl.engine = "enable"\n'
              f'  ssl.pemfile = "{certs}/a.pem" }}\n')
    with serving(tmp_path, config) as running:
        running.tls_port = port
        yield running


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_curl_speaks_http2_in_cleartext_and_over_tls(h2_server):
    for args in (["--http2-prior-knowledge", f"http://127.0.0.1:{h2_server.port}/"],
                 ["-k", "--http2", f"https://127.0.0.1:{h2_server.tls_port}/"]):
        out = subprocess.run(["curl", "-s", "--max-time", "10", "-w", " %{http_version}",
                              *args], capture_output=True, text=True, timeout=20).stdout
        assert out == "hello from pylighttpd\n 2"


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_curl_upgrades_to_h2c_from_http1(h2_server):
    """`curl --http2` on http:// asks `Upgrade: h2c`: 101, then the request's answer
    as stream 1, and the next requests on the same connection as new streams."""
    base = f"http://127.0.0.1:{h2_server.port}"
    out = subprocess.run(["curl", "-sv", "--http2", "--max-time", "10", "-w",
                          " %{http_version}\n", f"{base}/", f"{base}/small3.txt"],
                         capture_output=True, text=True, timeout=20)
    assert out.stdout == "hello from pylighttpd\n 2\nsmall 3\n 2\n"
    assert "HTTP/1.1 101 Switching Protocols" in out.stderr
    assert "Re-using existing connection" in out.stderr


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_an_upgrade_with_bad_settings_or_over_tls_stays_http1(h2_server):
    over_tls = subprocess.run(["curl", "-sk", "--http1.1", "-H", "Upgrade: h2c", "-H",
                               "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA", "-H",
                               "Connection: Upgrade, HTTP2-Settings", "-w", " %{http_version}",
                               f"https://127.0.0.1:{h2_server.tls_port}/"],
                              capture_output=True, text=True, timeout=20).stdout
    assert over_tls == "hello from pylighttpd\n 1.1"
    with socket.create_connection(("127.0.0.1", h2_server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: !!not base64!!\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")


def test_two_different_http2_settings_fields_are_a_400(h2_server):
    """A field that may come once, as lighttpd takes it (an equal repeat is ignored)."""
    with socket.create_connection(("127.0.0.1", h2_server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"
                     b"HTTP2-Settings: AAMAAABl\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 Bad Request\r\n")


@pytest.mark.parametrize("version, connection, settings", [
    ("1.1", "Upgrade, HTTP2-Settings", ["!!!"]),              # no base64 (was 101)
    ("1.1", "Upgrade, HTTP2-Settings", ["AAM"]),              # 2 bytes (was no answer)
    ("1.1", "Upgrade, HTTP2-Settings", ["AAIAAAAF"]),         # ENABLE_PUSH 5 (no answer)
    ("1.1", "Upgrade", ["AAMAAABk"]),                         # 3.2.1: not a connection option
    ("1.0", "Upgrade, HTTP2-Settings", ["AAMAAABk"]),         # RFC 9110 7.8: ignored
], ids=["not-base64", "not-whole-settings", "bad-value", "no-connection-option",
        "http10"])
def test_an_upgrade_that_cannot_be_taken_is_answered_as_http1(h2_server, version,
                                                               connection, settings):
    fields = "".join(f"HTTP2-Settings: {value}\r\n" for value in settings)
    with socket.create_connection(("127.0.0.1", h2_server.port), timeout=5) as sock:
        sock.sendall(f"GET / HTTP/{version}\r\nHost: a\r\nConnection: {connection}\r\n"
                     f"Upgrade: h2c\r\n{fields}\r\n".encode())
        assert sock.recv(4096).startswith(f"HTTP/{version} 200 OK\r\n".encode())


def test_streams_are_answered_as_they_are_ready_not_in_order(h2_server):
    client = Client(h2_server.port)
    sleepy = client.get("/sleepy.sh")
    big = client.get("/big.bin")
    smalls = [client.get(f"/small{n}.txt") for n in range(20)]
    client.run(lambda: len(client.ended) == 22)
    assert client.ended[-1] == sleepy                 # the held stream held nothing else
    assert client.ended.index(big) > client.ended.index(smalls[0])
    assert client.bodies[big] == bytes(range(256)) * 16384
    assert [client.bodies[s] for s in smalls] == [f"small {n}\n".encode() for n in range(20)]
    assert client.bodies[sleepy] == b"slept\n"


def test_a_stream_without_window_does_not_stall_the_others(h2_server):
    client = Client(h2_server.tls_port, tls=True, window=16384)
    big = client.get("/big.bin")
    small = client.get("/small1.txt")
    client.run(lambda: small in client.ended)
    assert len(client.bodies.get(big, b"")) <= 65535    # the connection window at most
    assert big not in client.ended
    client.auto_window = True
    client.h2.increment_flow_control_window(1 << 24)
    client.h2.increment_flow_control_window(1 << 24, stream_id=big)
    client.send()
    client.run(lambda: big in client.ended)
    assert len(client.bodies[big]) == 4 << 20


def test_request_bodies_reach_backends_and_the_size_limit_holds(h2_server):
    client = Client(h2_server.port)
    small = client.get("/echo.sh", "POST", b"x" * 50000)
    huge = client.get("/echo.sh", "POST", b"x" * 60000 + b"y" * 60000)
    client.run(lambda: small in client.ended and huge in client.statuses)
    assert client.bodies[small].strip() == b"50000"
    assert client.statuses[huge] == "413"


def test_a_get_or_head_with_a_body_is_refused(h2_server):
    """400, as lighttpd's default parse options refuse it: a body in DATA frames, or
    announced by Content-Length; an empty DATA frame that ends the stream is none."""
    client = Client(h2_server.port)
    refused = [client.get("/small0.txt", "GET", b"abc"),
               client.get("/small0.txt", "HEAD", b"abc")]
    fields = [(":method", "GET"), (":path", "/small1.txt"), (":scheme", "http"),
              (":authority", "127.0.0.1")]
    announced = client.h2.get_next_available_stream_id()
    client.h2.send_headers(announced, fields + [("content-length", "3")])
    client.h2.send_data(announced, b"abc", end_stream=True)
    empty = client.h2.get_next_available_stream_id()
    client.h2.send_headers(empty, fields)
    client.h2.send_data(empty, b"", end_stream=True)
    client.send()
    plain = client.get("/small2.txt")
    streams = refused + [announced, empty, plain]
    client.run(lambda: all(stream in client.statuses for stream in streams))
    assert [client.statuses[stream] for stream in streams] == \
        ["400", "400", "400", "200", "200"]
    assert client.goaway is None           # the refusals end their streams alone


def test_a_body_nobody_reads_is_answered_at_once_and_its_upload_stopped(h2_server):
    """A POST to a static file that announces 1 MB and sends 16 KiB: answered at once,
    then RST_STREAM(NO_ERROR) asks the client to stop sending (RFC 9113 8.1), as
    lighttpd does; the connection serves on."""
    client = Client(h2_server.port)
    posted = client.h2.get_next_available_stream_id()
    client.h2.send_headers(posted, [(":method", "POST"), (":path", "/small0.txt"),
                                    (":scheme", "http"), (":authority", "127.0.0.1"),
                                    ("content-length", "1000000")])
    client.h2.send_data(posted, b"x" * 16384)
    client.send()
    client.run(lambda: posted in client.resets)
    assert (client.statuses[posted], client.bodies[posted]) == ("200", b"small 0\n")
    assert client.resets[posted] == h2.errors.ErrorCodes.NO_ERROR
    expecting = client.h2.get_next_available_stream_id()     # asked for no body either
    client.h2.send_headers(expecting, [(":method", "POST"), (":path", "/small1.txt"),
                                       (":scheme", "http"), (":authority", "127.0.0.1"),
                                       ("content-length", "3"), ("expect", "100-continue")])
    client.send()
    client.run(lambda: expecting in client.resets)
    assert client.statuses[expecting] == "200" and expecting not in client.interim
    after = client.get("/small2.txt")
    client.run(lambda: after in client.ended)
    assert client.bodies[after] == b"small 2\n" and client.goaway is None


def test_a_body_that_waits_for_100_continue_gets_it(h2_server):
    """RFC 9110 10.1.1: a client that sends `Expect: 100-continue` waits for the
    interim 100 before its body (curl a second); it comes as soon as the script holds
    the request, as over HTTP/1.1.  Another expectation is answered 417, as over HTTP/1.1."""
    client = Client(h2_server.port)
    fields = [(":method", "POST"), (":path", "/echo.sh"), (":scheme", "http"),
              (":authority", "127.0.0.1"), ("content-length", "3")]
    waiting = client.h2.get_next_available_stream_id()
    client.h2.send_headers(waiting, fields + [("expect", "100-continue")])
    client.send()
    client.run(lambda: waiting in client.interim)
    assert client.interim[waiting] == "100" and waiting not in client.statuses
    client.h2.send_data(waiting, b"abc", end_stream=True)
    unknown = client.h2.get_next_available_stream_id()
    client.h2.send_headers(unknown, fields + [("expect", "something")])
    client.h2.send_data(unknown, b"abc", end_stream=True)
    client.send()
    client.run(lambda: waiting in client.ended and unknown in client.statuses)
    assert (client.statuses[waiting], client.bodies[waiting].strip()) == ("200", b"3")
    assert client.statuses[unknown] == "417" and unknown not in client.interim


def test_rapid_reset_is_answered_with_goaway(h2_server):
    """400 streams opened and reset, sent at once (sent one by one, the server may
    end the connection while the client still sends)."""
    client = Client(h2_server.port)
    for _ in range(400):
        stream = client.h2.get_next_available_stream_id()
        client.h2.send_headers(stream, [(":method", "GET"), (":path", "/small1.txt"),
                                        (":scheme", "http"), (":authority", "127.0.0.1")],
                               end_stream=True)
        client.h2.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
    client.send()
    client.run(lambda: client.goaway is not None)
    assert client.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    again = Client(h2_server.port)
    stream = again.get("/small2.txt")
    again.run(lambda: stream in again.ended)
    assert again.bodies[stream] == b"small 2\n"


def test_a_continuation_flood_is_cut_off(h2_server):
    """HEADERS without END_HEADERS, then CONTINUATION frames without end: the server
    gives up long before memory is at risk."""
    client = Client(h2_server.port)
    sent = 0
    with pytest.raises(OSError):
        client.sock.sendall(struct.pack(">I", 10)[1:] + bytes([1, 0]) + struct.pack(">I", 1)
                            + b"\x82\x86\x84\x41\x05hello")
        for _ in range(100_000):                    # 100 MB if nobody stops it
            client.sock.sendall(struct.pack(">I", 1000)[1:] + bytes([9, 0])
                                + struct.pack(">I", 1) + b"a" * 1000)
            sent += 1
        client.sock.settimeout(5)
        if not client.sock.recv(1 << 16):
            raise ConnectionResetError("closed")
    assert sent < 20_000


@pytest.mark.skipif(not shutil.which("nghttp"), reason="needs nghttp (nghttp2-client)")
def test_a_reload_sends_goaway_and_finishes_the_held_stream(h2_server):
    """nghttp, as the h2 library's client side stops at a GOAWAY."""
    client = subprocess.Popen(["nghttp", "-nv", f"http://127.0.0.1:{h2_server.port}/sleepy.sh"],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.4)                                 # the CGI script is running
    h2_server.process.send_signal(signal.SIGHUP)
    out, _ = client.communicate(timeout=15)
    assert "recv GOAWAY frame" in out and "error_code=NO_ERROR" in out
    assert ":status: 200" in out and "recv DATA frame <length=6, flags=0x01" in out


def test_h2c_can_be_switched_off(tmp_path):
    flags = 'server.feature-flags = ("server.h2c" => "disable")\n'
    with serving(tmp_path, flags) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.0 505 ")    # as an HTTP/1 request
        if shutil.which("curl"):
            out = subprocess.run(["curl", "-s", "--http2", "--max-time", "10", "-w",
                                  " %{http_version}", f"http://127.0.0.1:{running.port}/"],
                                 capture_output=True, text=True, timeout=20).stdout
            assert out == "hello from pylighttpd\n 1.1"          # no Upgrade


@pytest.mark.skipif(not shutil.which("h2load"), reason="needs h2load (nghttp2-client)")
def test_reloads_under_h2load_over_tls_fail_no_request(tmp_path, certs):
    """A HUP every second for 8 s while h2load keeps 10 connections of 10 streams busy
    over TLS: every request that reached the server is answered in full (the drain
    GOAWAY names the last stream only after a PING round trip).  h2load does not
    reconnect after a GOAWAY and counts what it had not sent yet as failed (nghttp2
    refuses it locally), so the server's side is checked: every request it logged was
    answered whole, and h2load's successes are among them; what a run did not send,
    the next sends."""
    port = free_port()
    config = (f'server.modules = ("mod_openssl", "mod_accesslog", "mod_indexfile", '
              f'"mod_staticfile")\naccesslog.filename = "{tmp_path}/access.log"\n'
              f'$SERVER["socket"] == "127.0.0.1:{port}" {{ ssl.engine = "enable"\n'
              f'  ssl.pemfile = "{certs}/a.pem" }}\n')
    stop = threading.Event()
    with serving(tmp_path, config) as running:
        def reload_every_second() -> None:
            while not stop.wait(1.0):
                running.process.send_signal(signal.SIGHUP)

        reloader = threading.Thread(target=reload_every_second)
        reloader.start()
        answered = runs = 0
        deadline = time.monotonic() + 8
        try:
            while time.monotonic() < deadline:
                out = subprocess.run(["h2load", "-n", "2000", "-c", "10", "-m", "10",
                                      f"https://127.0.0.1:{port}/index.html"],
                                     capture_output=True, text=True, timeout=30).stdout
                answered += _h2load_succeeded(out)
                runs += 1
        finally:
            stop.set()
            reloader.join()
        time.sleep(1.0)                               # the last workers' log lines
    log = (tmp_path / "access.log").read_text().splitlines()
    h2_lines = [line for line in log if '"GET /index.html HTTP/2.0"' in line]
    assert runs >= 2 and answered >= 2000
    assert all('HTTP/2.0" 200 22 ' in line for line in h2_lines)   # none cut short
    assert len(h2_lines) >= answered


def _h2load_succeeded(out: str) -> int:
    summary = next(line for line in out.splitlines() if line.startswith("requests:"))
    return int(summary.replace(",", "").split()[7])


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_an_upgrade_request_with_a_body_keeps_it(h2_server):
    """curl --http2 on http:// asks to upgrade; with a body the request cannot switch
    (the body comes first), so it is answered over HTTP/1.1 with its body read."""
    out = subprocess.run(["curl", "-s", "--max-time", "10", "--http2", "--data-binary", "abc",
                          f"http://127.0.0.1:{h2_server.port}/echo.sh"],
                         capture_output=True, text=True, timeout=20).stdout
    assert out.strip() == "3"


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_the_access_log_counts_the_bytes_of_each_stream(tmp_path):
    """%b is the body sent (0 for a HEAD, as lighttpd logs it), %O adds the answer's
    HEADERS frames, %I is the request's fields and body."""
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "page.txt").write_text("x" * 1000)
    config = (f'server.modules = ("mod_accesslog", "mod_staticfile")\n'
              f'accesslog.filename = "{tmp_path}/access.log"\n'
              f'accesslog.format = "%U %m %s %b %O %I"\n')
    with serving(tmp_path, config) as running:
        for extra in ([], ["-I"], ["--data-binary", "abcde"]):
            subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "10",
                            "--http2-prior-knowledge", *extra,
                            f"http://127.0.0.1:{running.port}/page.txt"], timeout=20)
    lines = sorted(line.split()[1:] for line in (tmp_path / "access.log").read_text()
                   .splitlines() if line.startswith("/page.txt "))   # not the start-up
    # check's requests; sorted, as each worker writes its own lines
    assert [line[:3] for line in lines] == [["GET", "200", "1000"], ["HEAD", "200", "0"],
                                            ["POST", "200", "1000"]]
    for method, _status, body, out, taken in lines:
        assert 1000 + 20 < int(out) < 1000 + 300 if method != "HEAD" else 20 < int(out) < 300
        assert 40 < int(taken) - (5 if method == "POST" else 0) < 300
