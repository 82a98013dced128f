"""Exceptions the request path raises to end a request with an HTTP status."""

from __future__ import annotations


class BadRequest(Exception):
    """The request cannot be handled: answer `status` and close the connection."""

    def __init__(self, status: int = 400, reason: str = "") -> None:
        super().__init__(reason or str(status))
        self.status = status


class BodyNotStored(OSError):
    """A request body's bytes could not be written to its file in server.upload-dirs
    (a full disk, a directory gone): the request is answered 500, as lighttpd
    answers it, and the error log says why once."""
