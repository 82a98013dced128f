"""Answers made during a round of events go out together once it is dispatched
(worker/loop.py, EventLoop.sends_later), on the loop alone and on real connections."""

from __future__ import annotations

import os
import select
import socket

import pytest

from master.configload import load
from shared import log as shared_log
from server_util import config_text
from sites import make_docroot
from worker.handler import Pipeline
from worker.loop import SEND_BATCH, EventLoop
from worker.module import Module
from worker.server import Server


class _Ready:
    """A readable fd whose event asks the loop to send later for `senders`."""

    def __init__(self, loop: EventLoop, log: list, senders: list, asks: int = 2) -> None:
        self.read_end, self.write_end = os.pipe()
        os.write(self.write_end, b"x")
        self.loop, self.log, self.senders, self.asks = loop, log, senders, asks
        loop.register(self.read_end, 1, self)      # EPOLLIN

    def on_event(self, _mask: int) -> None:
        self.log.append(("event", self.read_end))
        for sender in self.senders:
            for _ in range(self.asks):       # asked twice: called once all the same
                assert self.loop.sends_later(sender)
            self.log.append(("asked", sender.name))

    def close(self) -> None:
        self.loop.unregister(self.read_end)
        os.close(self.read_end)
        os.close(self.write_end)


class _Sender:
    def __init__(self, name: str, log: list, fails: bool = False) -> None:
        self.name, self.log, self.fails = name, log, fails

    def on_event(self, mask: int) -> None:
        assert mask == select.EPOLLOUT
        self.log.append(("send", self.name))
        if self.fails:
            raise RuntimeError("a bug in a sender")


def test_senders_are_called_once_the_round_s_events_are_dispatched():
    loop, log = EventLoop(), []
    first = _Ready(loop, log, [_Sender("a", log)])
    second = _Ready(loop, log, [_Sender("b", log)])
    loop.run_once(0.1)
    assert [kind for kind, _ in log] == ["event", "asked", "event", "asked", "send", "send"]
    assert sorted(name for kind, name in log if kind == "send") == ["a", "b"]
    assert not loop.dispatching and not loop.senders
    assert not loop.sends_later(_Sender("outside a round", log))
    first.close()
    second.close()
    loop.close()


def test_a_long_round_sends_every_send_batch_senders():
    loop, log = EventLoop(), []
    many = _Ready(loop, log, [_Sender(str(n), log) for n in range(SEND_BATCH + 3)], asks=1)
    loop.run_once(0.1)
    kinds = [kind for kind, _ in log]
    assert kinds.count("send") == SEND_BATCH + 3
    # the first SEND_BATCH went out as the last of them asked, before the others asked
    first_send = kinds.index("send")
    assert kinds[1:first_send] == ["asked"] * (SEND_BATCH - 1)
    assert kinds[first_send:first_send + SEND_BATCH] == ["send"] * SEND_BATCH
    many.close()
    loop.close()


def test_a_failing_sender_is_logged_and_the_others_still_send(monkeypatch):
    errors: list[str] = []
    monkeypatch.setattr(shared_log, "error", lambda source, text: errors.append(text))
    loop, log = EventLoop(), []
    ready = _Ready(loop, log, [_Sender("bad", log, fails=True), _Sender("good", log)])
    loop.run_once(0.1)
    assert ("send", "good") in log
    assert any("RuntimeError: a bug in a sender" in text for text in errors)
    ready.close()
    loop.close()


class _PeeksAtOthers(Module):
    """Notes, as each request is answered, whether the clients answered before it in
    the same round have received anything yet."""

    clients: list[socket.socket] = []
    seen: list[bool] = []

    def handle_uri_clean(self, request):
        received = []
        for client in type(self).clients:
            try:
                received.append(bool(client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)))
            except BlockingIOError:
                received.append(False)
        type(self).seen.append(any(received))
        return None


@pytest.fixture
def server(tmp_path):
    docroot = make_docroot(tmp_path)
    conf = tmp_path / "batch.conf"
    conf.write_text(config_text(docroot, "", ("mod_staticfile",)))
    server = Server(load(str(conf)), [])
    server.pipeline = Pipeline(server.pipeline.modules + [_PeeksAtOthers(None)],
                               condition_fields=())
    yield server
    server.close_all()


def test_a_round_s_answers_leave_after_all_of_its_requests_are_answered(server):
    pairs = [socket.socketpair() for _ in range(3)]
    _PeeksAtOthers.clients = [client for client, _ in pairs]
    _PeeksAtOthers.seen = []
    connections = [server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
                   for _, end in pairs]
    for client, _ in pairs:
        client.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
    server.loop.run_once(0.5)
    assert _PeeksAtOthers.seen == [False, False, False]
    for client, _ in pairs:
        client.settimeout(2)
        assert client.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    assert all(not connection.out.chunks and connection.requests_done == 1
               for connection in connections)
