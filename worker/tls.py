"""TLS over a connection's socket: the third transport (worker/transport.py), with
pyOpenSSL.

The connection reads and writes plaintext through it as through a plain socket; the
handshake happens inside the first reads (OpenSSL's SSL_read does it in server mode).
What differs:
- a read may need the socket to take a write first (the server's handshake flight
  does not fit the socket buffer): `read_wants_write` makes the connection poll for
  EPOLLOUT and read again then;
- OpenSSL may hold decrypted bytes of a record the socket no longer signals: a read
  takes everything OpenSSL has (`pending`), so none waits for an event that never
  comes;
- output goes through SSL_write, so files are read from the page cache in steps of
  WRITE_SIZE (ChunkQueue.peek / consume), never whole into memory; a write OpenSSL
  could not finish is retried with the very same bytes, as it requires.
A handshake that chose ALPN "acme-tls/1" (RFC 8737: a CA checking a challenge
certificate, mod_openssl's ssl.acme-tls-1) carries no HTTP: once the client's Finished
is in, the transport reads as ended and the connection closes.
Failures of the TLS layer (a client speaking plain HTTP, a bad record, an unexpected
EOF) are OSErrors to the connection, which closes: nothing of a request was read.
"""

from __future__ import annotations

import socket

from OpenSSL import SSL

from .chunkqueue import ChunkQueue
from .transport import SocketTransport

READ_SIZE = 64 * 1024
ALPN_ACME = b"acme-tls/1"
WRITE_SIZE = 64 * 1024          # plaintext per SSL_write: four full TLS records
SEND_BUDGET = 1 << 22           # bytes per send call, as for plain sockets


class TLSTransport(SocketTransport):
    """A server-side TLS connection on a non-blocking socket."""

    __slots__ = ("tls", "read_wants_write", "_retry")

    def __init__(self, sock: socket.socket, context: SSL.Context) -> None:
        super().__init__(sock)
        self.tls = SSL.Connection(context, sock)
        self.tls.set_accept_state()
        self.read_wants_write = False
        self._retry: bytes | None = None     # a write OpenSSL asked to repeat

    def recv(self) -> bytes:
        """Plaintext the client sent; b"" at its end (close_notify or EOF); raises
        BlockingIOError when there is none yet, OSError when TLS failed."""
        tls = self.tls
        self.read_wants_write = False
        try:
            data = tls.recv(READ_SIZE)
            while tls.pending():
                data += tls.recv(tls.pending())
            return data
        except SSL.WantReadError:
            if self._acme_challenge_done():
                return b""
            raise BlockingIOError from None
        except SSL.WantWriteError:
            self.read_wants_write = True
            raise BlockingIOError from None
        except SSL.ZeroReturnError:
            return b""
        except SSL.SysCallError as err:
            if err.args[0] == -1:            # EOF without close_notify: an end as well
                return b""
            raise OSError(err.args[0], str(err.args[1])) from None
        except SSL.Error as err:
            raise OSError(f"TLS: {err}") from None

    def _acme_challenge_done(self) -> bool:
        return self.tls.get_alpn_proto_negotiated() == ALPN_ACME and \
            self.tls.get_peer_finished() is not None

    def send(self, out: ChunkQueue) -> int:
        """Send what OpenSSL takes now of the queue, up to SEND_BUDGET."""
        sent = 0
        while out.chunks and sent < SEND_BUDGET:
            data = self._retry if self._retry is not None else out.peek(WRITE_SIZE)
            try:
                written = self.tls.send(data)
            except (SSL.WantWriteError, SSL.WantReadError):
                self._retry = data
                if sent:
                    return sent
                raise BlockingIOError from None
            except SSL.SysCallError as err:
                raise OSError(err.args[0], str(err.args[1])) from None
            except SSL.Error as err:
                raise OSError(f"TLS: {err}") from None
            self._retry = None
            out.consume(written)
            sent += written
            if written < len(data):
                break
        return sent

    def send_bytes(self, data: bytes) -> int:
        """What OpenSSL takes of `data` now; the rest is queued by the caller (a
        write OpenSSL asked to repeat is repeated from the queue: see send)."""
        if self._retry is not None:
            raise BlockingIOError      # an earlier write must be repeated first
        try:
            return self.tls.send(data)
        except (SSL.WantWriteError, SSL.WantReadError):
            self._retry = data         # repeated whole, as OpenSSL requires
            raise BlockingIOError from None
        except SSL.SysCallError as err:
            raise OSError(err.args[0], str(err.args[1])) from None
        except SSL.Error as err:
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
