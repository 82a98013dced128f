"""TLS over a connection's socket: the third transport (worker/transport.py), with
pyOpenSSL.

The connection reads and writes plaintext through it as through a plain socket; the
handshake happens inside the first reads (SSL_do_handshake until it is done).
What differs:
- a read may need the socket to take a write first (the server's handshake flight
  does not fit the socket buffer): `read_wants_write` makes the connection poll for
  EPOLLOUT and read again then;
- OpenSSL may hold decrypted bytes of a record the socket no longer signals: a read
  takes everything OpenSSL has (`pending`), so none waits for an event that never
  comes;
- output goes through SSL_write, so files are read from the page cache in steps of
  WRITE_SIZE (ChunkQueue.peek / consume), never whole into memory; a write OpenSSL
  could not finish is retried with the very same bytes, as it requires, and what a
  partial write left of a step (the socket took some records of it) is written next
  from memory, not read again.
A handshake that chose ALPN "acme-tls/1" (RFC 8737: a CA checking a challenge
certificate, mod_openssl's ssl.acme-tls-1) carries no HTTP: once the client's Finished
is in, the transport reads as ended and the connection closes.
Failures of the TLS layer (a client speaking plain HTTP, a bad record, an unexpected
EOF) are OSErrors to the connection, which closes: nothing of a request was read.
"""

from __future__ import annotations

import socket

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi, lib as _lib

from .chunkqueue import ChunkQueue
from .transport import SocketTransport

READ_SIZE = 64 * 1024
ALPN_ACME = b"acme-tls/1"
WRITE_SIZE = 64 * 1024          # plaintext per SSL_write: four full TLS records
RECORD = 16 * 1024              # a full TLS record's plaintext: a shorter rest is read again
SEND_BUDGET = 1 << 22           # bytes per send call, as for plain sockets
# what SSL_read writes into, for every connection of the worker (its bytes are copied
# out at once): one buffer stays in the CPU's caches where one per connection would not
_READ_BUFFER = _ffi.new("char[]", READ_SIZE)


class TLSTransport(SocketTransport):
    """A server-side TLS connection on a non-blocking socket.

    Records are read and written by OpenSSL's SSL_read and SSL_write called
    directly through the binding pyOpenSSL carries (reads into the worker's one
    buffer): pyOpenSSL's recv and send allocate a buffer and check its
    callbacks' problems on every call, which together cost as much as the TLS work
    for a small request.  The handshake is pyOpenSSL's (its callbacks for SNI,
    ALPN, client verification and OCSP raise what they met there), and a call that
    fails is read by pyOpenSSL, so its errors are what they were."""

    __slots__ = ("tls", "_unsent", "_ssl", "_established")

    def __init__(self, sock: socket.socket, context: SSL.Context) -> None:
        super().__init__(sock)
        self.tls = SSL.Connection(context, sock)
        self.tls.set_accept_state()
        self._ssl = self.tls._ssl            # the SSL* the direct calls take
        self._established = False
        # the queue's next bytes, peeked and not taken yet: a write OpenSSL asked to
        # repeat (it must be), or the rest of a partial one
        self._unsent: bytes | memoryview | None = None

    def recv(self) -> bytes:
        """Plaintext the client sent; b"" at its end (close_notify or EOF); raises
        BlockingIOError when there is none yet, OSError when TLS failed."""
        self.read_wants_write = False
        if not self._established and not self._handshake():
            return b""
        ssl, buffer = self._ssl, _READ_BUFFER
        count = _lib.SSL_read(ssl, buffer, READ_SIZE)
        if count <= 0:
            if _lib.SSL_get_error(ssl, count) == _lib.SSL_ERROR_WANT_READ:
                raise BlockingIOError
            return self._read_ended(self._failure(count))
        data = _ffi.buffer(buffer, count)[:]
        while _lib.SSL_pending(ssl):         # the rest of a record OpenSSL holds
            count = _lib.SSL_read(ssl, buffer, READ_SIZE)
            if count <= 0:
                break
            data += _ffi.buffer(buffer, count)[:]
        return data

    def _handshake(self) -> bool:
        """Drive the handshake on (pyOpenSSL's, with its callbacks); True once done,
        False when the connection ends with it (the client's end, or acme-tls/1: no
        HTTP follows)."""
        try:
            self.tls.do_handshake()
        except SSL.Error as err:
            self._read_ended(err)            # raises, or returns at the client's end
            return False
        if self.tls.get_alpn_proto_negotiated() == ALPN_ACME:
            return False
        self._established = True
        return True

    def _failure(self, result: int) -> SSL.Error:
        """What pyOpenSSL makes of a call that returned `result` (it also empties
        OpenSSL's error queue)."""
        try:
            self.tls._raise_ssl_error(self._ssl, result)
        except SSL.Error as err:
            return err
        return SSL.Error(f"TLS call failed ({result})")

    def _read_ended(self, err: SSL.Error) -> bytes:
        """A read's failure as the connection knows them: BlockingIOError to wait
        (read_wants_write when the socket must take a write first), b"" at the
        client's end (close_notify, or EOF without it), OSError otherwise."""
        if isinstance(err, SSL.WantReadError):
            raise BlockingIOError from None
        if isinstance(err, SSL.WantWriteError):
            self.read_wants_write = True
            raise BlockingIOError from None
        if isinstance(err, SSL.ZeroReturnError):
            return b""
        if isinstance(err, SSL.SysCallError):
            if err.args[0] == -1:            # EOF without close_notify: an end as well
                return b""
            raise OSError(err.args[0], str(err.args[1])) from None
        raise OSError(f"TLS: {err}") from None

    def send(self, out: ChunkQueue) -> int:
        """Send what OpenSSL takes now of the queue, up to SEND_BUDGET."""
        return self.send_limited(out, SEND_BUDGET)

    def send_limited(self, out: ChunkQueue, budget: int) -> int:
        """Send what OpenSSL takes now of the queue, up to `budget` bytes (a write
        OpenSSL asked to repeat goes again whole, whatever the budget)."""
        sent = 0
        while out.chunks and sent < budget:
            data = self._unsent if self._unsent is not None else \
                out.peek(min(WRITE_SIZE, budget - sent))
            try:
                written = self._write(data)
            except BlockingIOError:
                if sent:
                    return sent
                raise
            out.consume(written)
            sent += written
            if written < len(data):
                if len(data) - written >= RECORD:
                    self._unsent = memoryview(data)[written:]
                break
        return sent

    def _write(self, data: bytes | memoryview) -> int:
        """One SSL_write; a write OpenSSL could not finish is kept to be repeated with
        the very same bytes, as it requires (BlockingIOError); OSError when TLS
        failed."""
        written = _lib.SSL_write(self._ssl, _ffi.from_buffer(data), len(data))
        if written > 0:
            self._unsent = None
            return written
        err = self._failure(written)
        if isinstance(err, (SSL.WantWriteError, SSL.WantReadError)):
            self._unsent = data
            raise BlockingIOError from None
        if isinstance(err, SSL.SysCallError):
            raise OSError(err.args[0], str(err.args[1])) from None
        raise OSError(f"TLS: {err}") from None

    def shutdown_write(self) -> None:
        """close_notify, then the TCP half-close (the lingering read follows)."""
        try:
            self.tls.shutdown()
        except SSL.Error:
            pass                 # the client may be gone already: the close follows
        self.sock.shutdown(socket.SHUT_WR)

    def negotiated(self) -> bytes:
        """The protocol ALPN chose ("h2", "http/1.1"), or b"" without ALPN."""
        return self.tls.get_alpn_proto_negotiated() or b""
