"""The TLS transport in process: a TLSTransport on one end of a socketpair, a client of
Python's ssl module (a memory BIO, so nothing blocks) on the other.  Once the handshake
is done, records go through OpenSSL's SSL_read / SSL_write directly, not pyOpenSSL's
per-call wrappers; what the connection sees (plaintext, BlockingIOError, b"" at the
client's end, OSError when TLS failed, a write repeated whole) is as before."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from OpenSSL import SSL

from loadtests.tls_microbench import MemoryTLS
from worker.chunkqueue import ChunkQueue
from worker.modules import mod_openssl
from worker.tls import TLSTransport

@pytest.fixture(scope="module")
def context(tmp_path_factory) -> SSL.Context:
    """mod_openssl's context for a certificate, as the config's defaults make it."""
    base: Path = tmp_path_factory.mktemp("tlscert")
    crt, key = base / "c.crt", base / "c.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    pem = base / "c.pem"
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    values = {directive.name: directive.default for directive in mod_openssl.DIRECTIVES}
    values["ssl.pemfile"] = str(pem)
    return mod_openssl.build_context(values, {})


def test_idle_connections_give_openssl_s_buffers_back(context):
    """SSL_MODE_RELEASE_BUFFERS: a keep-alive connection waiting for its next request
    holds no record buffers (some 20 KiB each); partial writes and a moved retry
    buffer stay allowed (pyOpenSSL's own modes)."""
    modes = context.set_mode(0)
    assert modes & SSL.MODE_RELEASE_BUFFERS
    assert modes & 0x1 and modes & 0x2    # ENABLE_PARTIAL_WRITE, ACCEPT_MOVING_WRITE_BUFFER


@pytest.fixture
def pair(context):
    """(server transport, client), handshake done."""
    server_sock, client_sock = socket.socketpair()
    server_sock.setblocking(False)
    client_sock.setblocking(False)
    transport = TLSTransport(server_sock, context)
    client = MemoryTLS(client_sock)

    def serve() -> None:
        with pytest.raises(BlockingIOError):
            transport.recv()
    client.handshake(serve)
    yield transport, client
    transport.close()
    client_sock.close()


def _no_wrappers(monkeypatch) -> None:
    def refused(*_args, **_kwargs):
        raise AssertionError("pyOpenSSL's per-call wrapper used after the handshake")
    for name in ("recv", "read", "recv_into", "send", "write", "sendall"):
        monkeypatch.setattr(SSL.Connection, name, refused)


def test_records_after_the_handshake_go_through_openssl_directly(pair, monkeypatch):
    transport, client = pair
    with pytest.raises(BlockingIOError):       # the client's Finished: no data yet
        transport.recv()
    _no_wrappers(monkeypatch)
    for number in range(3):
        request = b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % number
        client.send(request)
        assert transport.recv() == request
        with pytest.raises(BlockingIOError):
            transport.recv()
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % number
        out = ChunkQueue()
        out.append(answer)
        assert transport.send(out) == len(answer) and not out.chunks
        assert client.recv() == answer


def test_a_large_upload_arrives_whole(pair):
    transport, client = pair
    body = bytes(range(256)) * 1024                   # 256 KiB: sixteen records
    received = b""
    for start in range(0, len(body), 32 * 1024):      # what the socket buffer takes
        client.send(body[start:start + 32 * 1024])
        for _ in range(100):
            try:
                received += transport.recv()
            except BlockingIOError:
                break
    assert received == body


def test_the_client_s_end_reads_as_b_empty_with_and_without_close_notify(context, pair):
    transport, client = pair
    try:
        client.tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    client.flush()
    assert transport.recv() == b""
    other_server, other_client = socket.socketpair()
    other_server.setblocking(False)
    other = TLSTransport(other_server, context)
    other_client.close()                              # EOF in the handshake
    assert other.recv() == b""
    other.close()


def test_a_bad_record_is_an_oserror(pair):
    transport, client = pair
    client.sock.sendall(b"\x17\x03\x03\x00\x20" + b"\xab" * 32)   # undecryptable
    with pytest.raises(OSError) as raised:
        transport.recv()
    assert not isinstance(raised.value, BlockingIOError)


def test_plain_http_on_the_tls_transport_is_an_oserror(context):
    server_sock, client_sock = socket.socketpair()
    server_sock.setblocking(False)
    transport = TLSTransport(server_sock, context)
    client_sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(OSError) as raised:
        transport.recv()
    assert not isinstance(raised.value, BlockingIOError)
    transport.close()
    client_sock.close()


def test_a_write_the_socket_cannot_take_is_repeated_whole(pair):
    transport, client = pair
    transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    out = ChunkQueue()
    payload = bytes(range(256)) * 4096                # 1 MiB
    out.append(payload)
    try:
        transport.send(out)
    except BlockingIOError:
        pass                                           # not one record went out
    assert out.chunks
    with pytest.raises(BlockingIOError):               # the held write goes whole,
        transport.send_limited(out, 1)                 # whatever the budget
    received = b""
    for _ in range(10_000):
        received += client.recv()
        if not out.chunks:
            break
        try:
            transport.send(out)
        except BlockingIOError:
            pass
    received += client.recv()
    assert received == payload


def test_a_file_sent_in_partial_writes_is_read_from_the_page_cache_once(pair, tmp_path,
                                                                       monkeypatch):
    """The socket takes a few records at a time: what a write left of its step is
    written next from memory, so the file's bytes are read about once (a rest shorter
    than a record is read again), and arrive whole and in order."""
    transport, client = pair
    transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    path = tmp_path / "file"
    payload = bytes(range(256)) * 4096                # 1 MiB
    path.write_bytes(payload)
    read = []
    pread = os.pread

    def counted(fd, size, offset):
        data = pread(fd, size, offset)
        read.append(len(data))
        return data
    monkeypatch.setattr(os, "pread", counted)
    out = ChunkQueue()
    out.append_file(os.open(path, os.O_RDONLY), 0, len(payload))
    received = b""
    partial = 0
    for _ in range(10_000):
        received += client.recv()
        if not out.chunks:
            break
        try:
            before = out.pending
            sent = transport.send(out)
            partial += 0 < sent < before and out.pending > 0
        except BlockingIOError:
            pass
    received += client.recv()
    assert received == payload
    assert partial > 4                                # the socket took part at a time
    assert sum(read) < len(payload) + partial * 16 * 1024


def test_backends_ssl_variables_are_made_once_per_connection(pair, monkeypatch):
    transport, _client = pair
    transport.tls.set_app_data(mod_openssl._TLSState("127.0.0.1:443", "127.0.0.1", ""))
    made = []
    real = mod_openssl.ssl_environment

    def counted(tls, values):
        made.append(values["ssl.verifyclient.exportcert"])
        return real(tls, values)
    monkeypatch.setattr(mod_openssl, "ssl_environment", counted)
    values = {"ssl.verifyclient.activate": False, "ssl.verifyclient.exportcert": False,
              "ssl.verifyclient.username": ""}
    first = mod_openssl.connection_environment(transport.tls, values)
    assert first["SSL_PROTOCOL"].startswith("TLSv1.")
    assert mod_openssl.connection_environment(transport.tls, values) == first
    other = dict(values, **{"ssl.verifyclient.exportcert": True})
    mod_openssl.connection_environment(transport.tls, other)
    assert made == [False, True]
