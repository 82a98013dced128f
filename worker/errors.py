"""Exceptions the request path raises to end a request with an HTTP status."""

from __future__ import annotations


class BadRequest(Exception):
    """The request cannot be handled: answer `status` and close the connection."""

    def __init__(self, status: int = 400, reason: str = "") -> None:
        super().__init__(reason or str(status))
        self.status = status
