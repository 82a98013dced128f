"""HTTP/2 defences against hostile peers, on one real worker process: each attack is
cut off or held to a bounded cost (the worker's RSS and CPU time are measured around
it) while another client keeps being served."""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import h2.errors
import h2.events
import h2.settings
import hpack
import pytest

sys.path.insert(0, str(Path(__file__).parent / "worker"))
from h2_inprocess import static_server  # noqa: E402
from server_util import WorkerProcess, config_text  # noqa: E402
from test_h2 import Client  # noqa: E402

psutil = pytest.importorskip("psutil")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, WINDOW_UPDATE = 0, 1, 4, 6, 8
END_STREAM, END_HEADERS = 0x1, 0x4
RSS_GROWTH = 24 << 20           # what an attack may add to the worker's memory
CPU_SPENT = 3.0                 # and its CPU seconds
PID_CGI = "#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def request_block(encoder: hpack.Encoder, path: str = "/small.txt",
                  extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    return encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", path),
                           (":authority", "127.0.0.1"), *extra])


@pytest.fixture
def worker(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "small.txt").write_text("small\n")
    with open(docroot / "huge.bin", "wb") as huge:     # sparse: 64 MiB of zeros
        huge.truncate(64 << 20)
    (docroot / "pid.sh").write_text(PID_CGI.format(pidfile=tmp_path / "cgi.pid"))
    (docroot / "pid.sh").chmod(0o755)
    config = tmp_path / "h2.conf"
    config.write_text(config_text(docroot, 'cgi.assign = (".sh" => "")\n'
                                  "server.max-write-idle = 2\n",
                                  modules=("mod_cgi", "mod_staticfile")))
    with WorkerProcess(config) as running:
        running.tmp = tmp_path
        yield running


@contextmanager
def bounded(worker: WorkerProcess):
    """Around an attack: the worker's memory and CPU stay bounded, and a bystander
    asking small files over HTTP/1.1 all along is answered every time."""
    process = psutil.Process(worker.process.pid)
    assert worker.get("/small.txt")[0] == 200
    rss, cpu = process.memory_info().rss, sum(process.cpu_times()[:2])
    answers: list[int] = []
    stop = threading.Event()

    def bystander() -> None:
        while not stop.is_set():
            answers.append(worker.get("/small.txt")[0])
            time.sleep(0.05)

    thread = threading.Thread(target=bystander)
    thread.start()
    try:
        yield
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert answers and set(answers) == {200}
    assert process.memory_info().rss - rss < RSS_GROWTH
    assert sum(process.cpu_times()[:2]) - cpu < CPU_SPENT


FLOOD = 64 << 20                # bytes an unchecked flood would send
IN_FLIGHT = 16 << 20            # what the kernel's buffers may take before the end


def flood(sock: socket.socket, unit: bytes) -> int:
    """Send copies of `unit` (in batches) until the server stops it or FLOOD bytes are
    out; how many bytes went out."""
    batch = unit * (65536 // len(unit))
    sent = 0
    try:
        while sent < FLOOD:
            sock.sendall(batch)
            sent += len(batch)
    except OSError:
        pass
    return sent


ENDED = -1           # closed or reset with no GOAWAY left to read


def goaway_code(sock: socket.socket, seconds: float = 5.0) -> int | None:
    """Read until the server ends the connection: its GOAWAY's error code, or ENDED
    when none could be read (the server closed with the flood unread, and the
    kernel's RST may overtake the GOAWAY); None if it did not end it in time."""
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        return None
    code = _goaway_in(data)
    return ENDED if code is None else code


def _goaway_in(data: bytes) -> int | None:
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if data[3] == 7 and len(data) >= 9 + 8:
            return int.from_bytes(data[13:17], "big")
        data = data[9 + length:]
    return None


def opened(worker: WorkerProcess) -> socket.socket:
    sock = worker.socket()
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return sock


@pytest.mark.parametrize("unit", [
    frame(SETTINGS, 0, 0),
    frame(PING, 0, 0, b"12345678"),
    frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)),
    frame(0xfa, 0, 0, b"unknown"),
], ids=["settings", "ping", "window-update", "unknown-frame"])
def test_a_flood_of_idle_frames_gets_goaway_enhance_your_calm(worker, unit):
    """The peer never reads: the acknowledgements do not pile up, the flood is cut."""
    with bounded(worker):
        sock = opened(worker)
        assert flood(sock, unit) < IN_FLIGHT
        assert goaway_code(sock) in (h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, ENDED)
        sock.close()


def test_a_flood_of_empty_data_frames_is_cut(worker):
    encoder = hpack.Encoder()
    with bounded(worker):
        sock = opened(worker)
        sock.sendall(frame(HEADERS, END_HEADERS, 1, encoder.encode([
            (":method", "POST"), (":scheme", "http"), (":path", "/pid.sh"),
            (":authority", "127.0.0.1")])))
        assert flood(sock, frame(DATA, 0, 1)) < IN_FLIGHT
        assert goaway_code(sock) in (h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, ENDED)
        sock.close()


def test_an_hpack_bomb_is_not_decoded_beyond_the_limit(worker):
    """A 4000-byte field put in the dynamic table, then named 16000 times in a block of
    16 KB: 64 MB if decoded whole."""
    encoder = hpack.Encoder()
    with bounded(worker):
        sock = opened(worker)
        sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block(
            encoder, extra=(("x-bomb", "b" * 4000),))))
        bomb = bytes([0x82, 0x86, 0x84]) + bytes([0x80 | 62]) * 16000
        sent = 0
        with pytest.raises(OSError):
            for stream in range(3, 2 * FLOOD // len(bomb), 2):
                sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, stream, bomb))
                sent += 1
            sock.settimeout(5)
            while sock.recv(1 << 16):
                pass
            raise ConnectionResetError("closed")
        assert sent * len(bomb) < IN_FLIGHT
        sock.close()


def test_a_header_list_over_the_field_limit_is_431_for_its_stream_alone(worker):
    client = Client(worker.port)
    stream = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream, [(":method", "GET"), (":path", "/small.txt"),
                                    (":scheme", "http"), (":authority", "127.0.0.1"),
                                    ("x-big", "b" * 9000)], end_stream=True)
    client.send()
    after = client.get("/small.txt")
    client.run(lambda: after in client.ended and stream in client.ended)
    assert client.statuses[stream] == "431"
    assert client.bodies[after] == b"small\n"


def test_a_peer_that_never_reads_its_answers_stops_being_read(worker):
    """Requests keep coming, the answers are never read: the worker stops reading
    that connection once its queue is full, and closes it after max-write-idle."""
    encoder = hpack.Encoder()
    with bounded(worker):
        sock = opened(worker)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(1.0)
        sent = 0
        with pytest.raises(OSError):
            for stream in range(1, 2 ** 31, 2):
                sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, stream,
                                   request_block(encoder)))
                sent += 1
        assert sent < 200_000
        assert wait_closed(sock, 10)


def wait_closed(sock: socket.socket, seconds: float) -> bool:
    """Read (and drop) until the server closes the connection."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(1 << 20):
                return True
    except ConnectionResetError:
        return True
    except OSError:
        return False
    return False


def test_streams_stalled_on_a_zero_window_pin_no_memory_and_are_closed(worker):
    """100 streams on a 64 MiB file, the window never opened: the bodies stay file
    ranges, and the stalled connection is closed after server.max-write-idle."""
    with bounded(worker):
        client = Client(worker.port, window=0)
        streams = [client.get("/huge.bin") for _ in range(100)]
        client.run(lambda: all(s in client.statuses for s in streams))
        started = time.monotonic()
        assert wait_closed(client.sock, 8)
        assert 1.5 < time.monotonic() - started < 8


def test_streams_beyond_the_concurrency_limit_are_refused_one_by_one(worker):
    client = Client(worker.port, window=0)
    client.h2.remote_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
    resets: dict[int, int] = {}
    own_event = client._event

    def event(ev) -> None:
        if isinstance(ev, h2.events.StreamReset):
            resets[ev.stream_id] = ev.error_code
        own_event(ev)
    client._event = event
    with bounded(worker):
        streams = [client.get("/huge.bin") for _ in range(150)]
        client.run(lambda: len(client.statuses) + len(resets) == 150)
    assert len(client.statuses) == 100 and client.goaway is None
    assert set(resets.values()) == {h2.errors.ErrorCodes.REFUSED_STREAM}
    assert sorted(resets) == streams[100:]


def test_a_reset_stream_ends_its_cgi_process(worker):
    client = Client(worker.port)
    stream = client.get("/pid.sh")
    pidfile = worker.tmp / "cgi.pid"
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    assert os.path.exists(f"/proc/{pid}")
    client.h2.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
    client.send()
    deadline = time.monotonic() + 1.0
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, "the CGI process outlived its stream"
        time.sleep(0.02)


def test_the_session_stops_reading_a_peer_that_does_not_read(tmp_path):
    """In-process, over a socketpair whose client end never reads: HEAD requests keep
    coming (their answers are heads only, never held by a flow window), and the
    session's wire queue stays near READ_STOP while it stops asking for input."""
    from worker.h2 import EPOLLIN, READ_STOP

    server = static_server(tmp_path)
    client, end = socket.socketpair()
    client.setblocking(False)
    fd = end.fileno()
    server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
    encoder = hpack.Encoder()
    head = encoder.encode([(":method", "HEAD"), (":scheme", "http"), (":path", "/small.txt"),
                           (":authority", "127.0.0.1"), ("x-pad", "p" * 200)])
    client.send(PREFACE + frame(SETTINGS, 0, 0))
    stream, most = 1, 0
    try:
        for batches in range(4000):
            batch = b"".join(frame(HEADERS, END_HEADERS | END_STREAM, stream + 2 * n, head)
                             for n in range(50))
            try:
                client.send(batch)
            except BlockingIOError:
                pass
            stream += 100
            server.loop.run_once(0.0)
            session = server.connections.get(fd)
            assert session is not None, f"closed after {batches} batches"
            most = max(most, session.out.pending)
        assert not session.events & EPOLLIN
        assert READ_STOP <= most < READ_STOP + (1 << 20)
    finally:
        server.close_all()
        client.close()
