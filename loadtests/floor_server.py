"""The least an HTTP/1.1 worker in Python does for a request of the 404 rows: an epoll
loop, accept, recv, the request parsed by httptools into a dict of fields, access() on
its path, a fixed 404 answer sent.  No URL cleaning, configuration, modules, stat
cache, counters or log: what is left is what any Python server pays (the interpreter,
its socket calls, the parser's callbacks).  loadtests/floor.py runs it beside lighttpd
and pylighttpd, compiled by mypyc as pylighttpd's hot modules are.

    python floor_server.py PORT DOCROOT WORKERS
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys

import httptools

BODY = (b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<html><head><title>404 Not Found"
        b"</title></head><body><h1>404 Not Found</h1></body></html>\n")
ANSWER = (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
          b"Date: Sat, 05 Dec 2026 20:00:00 GMT\r\nServer: floor\r\n\r\n%s"
          % (len(BODY), BODY))


class Request:
    """httptools' callbacks: the target and the fields of the requests of one read."""

    def __init__(self) -> None:
        self.url = b""
        self.fields: dict[str, str] = {}
        self.complete = 0

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        self.complete += 1


class Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.request = Request()
        self.parser = httptools.HttpRequestParser(self.request)


def serve(listener: socket.socket, docroot: str) -> None:
    """One worker's loop, until it is killed."""
    poll = select.epoll()
    listening = listener.fileno()
    poll.register(listening, select.EPOLLIN)
    clients: dict[int, Client] = {}
    while True:
        for fd, _events in poll.poll():
            if fd == listening:
                accept(listener, poll, clients)
            elif not answer(clients[fd], docroot):
                poll.unregister(fd)
                clients.pop(fd).sock.close()


def accept(listener: socket.socket, poll: select.epoll, clients: dict[int, Client]) -> None:
    while True:
        try:
            sock, _address = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        clients[sock.fileno()] = Client(sock)
        poll.register(sock.fileno(), select.EPOLLIN)


def answer(client: Client, docroot: str) -> bool:
    """The answers to what one read brought; False when the client is gone."""
    try:
        data = client.sock.recv(65536)
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
    if not data:
        return False
    request = client.request
    request.complete = 0
    try:
        client.parser.feed_data(data)
    except httptools.HttpParserError:
        return False
    if request.complete:
        path = request.url.decode("latin-1").partition("?")[0]
        os.access(docroot + path, os.F_OK)
        try:
            client.sock.send(ANSWER * request.complete)
        except (BlockingIOError, ConnectionError):
            return False
    return True


def main(argv: list[str]) -> None:
    port, docroot, workers = int(argv[1]), argv[2], int(argv[3])
    listeners = []
    for _ in range(workers):              # one SO_REUSEPORT listener each, as pylighttpd
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1024)
        listener.setblocking(False)
        listeners.append(listener)
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)    # for sigwait, the workers' too
    children = []
    for listener in listeners:
        child = os.fork()
        if child == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            serve(listener, docroot)
        children.append(child)
    signal.sigwait(stops)
    for child in children:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)


if __name__ == "__main__":
    main(sys.argv)
