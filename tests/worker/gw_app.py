"""A WSGI application for the gateway tests, and the servers that run it.

`application` answers by the query string: `status=NNN` that status, `sendfile=PATH`
an X-Sendfile header instead of a body, `sleep=SECS` late, `cut=1` a head and part of
a body, then the process dies; otherwise the CGI variables the tests look at and the
length and MD5 of the request body, as text.  As an authorizer (no CONTENT_LENGTH) it
approves (200 with Variable-User) unless the query has `deny`.

Run as a script it serves that application on a unix socket:
`gw_app.py fcgi|scgi SOCKET` (flup), or `gw_app.py garbage SOCKET` (answers bytes
that are no protocol at all).  uwsgi loads the file itself (`--wsgi-file`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from urllib.parse import parse_qs

SHOWN = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "PATH_TRANSLATED", "REQUEST_URI",
         "QUERY_STRING", "CONTENT_LENGTH", "CONTENT_TYPE", "SCRIPT_FILENAME",
         "DOCUMENT_ROOT", "REDIRECT_STATUS", "SERVER_PROTOCOL", "HTTP_X_CUSTOM", "USER",
         "HTTPS", "GATEWAY_INTERFACE")


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if "CONTENT_LENGTH" not in environ:      # an authorizer gets none (flup names no role)
        return _authorize(environ, start_response)
    if "sleep" in query:
        time.sleep(float(query["sleep"][0]))
    if "cut" in query:
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", "100000")])
        return _cut()
    if "sendfile" in query:
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Sendfile", query["sendfile"][0])])
        return [b"this body is replaced"]
    body = _read_body(environ)
    status = query.get("status", ["200"])[0]
    lines = [f"{name}={environ.get(name, '-')}" for name in SHOWN]
    lines.append(f"BODY={len(body)} {hashlib.md5(body).hexdigest()}")
    text = ("\n".join(lines) + "\n").encode()
    start_response(f"{status} Test", [("Content-Type", "text/plain"),
                                      ("Content-Length", str(len(text))),
                                      ("X-App", "gw_app")])
    return [text]


def _authorize(environ, start_response):
    if "deny" in environ.get("QUERY_STRING", ""):
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"denied by the authorizer\n"]
    start_response("200 OK", [("Variable-User", "alice"), ("Content-Type", "text/plain")])
    return [b"approved\n"]


def _read_body(environ) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    parts, left = [], length
    while left > 0:
        part = stream.read(min(left, 1 << 16))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _cut():
    yield b"x" * 1000
    time.sleep(0.2)
    os._exit(1)


def _garbage(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    while True:
        sock, _ = listener.accept()
        try:
            sock.recv(65536)
            sock.sendall(b"this is no protocol at all\r\n\r\n")
        except OSError:
            pass                          # a probe that only connected
        sock.close()


def main(kind: str, path: str) -> None:
    if kind == "garbage":
        _garbage(path)
    elif kind == "fcgi":
        from flup.server.fcgi import WSGIServer
        WSGIServer(application, bindAddress=path, roles=(1, 2)).run()
    else:
        from flup.server.scgi import WSGIServer as ScgiServer
        ScgiServer(application, bindAddress=path).run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
