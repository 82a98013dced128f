"""A module whose hook raises costs its request a 500, not the connection's answer: the
pipeline logs the traceback and answers, and the connection closes after it."""

from __future__ import annotations

import pytest

from server_util import detached_request
from shared import log
from worker.handler import Pipeline
from worker.module import WAIT, Module


class _Faulty(Module):
    """Raises from its clean-URL hook, or holds the request and raises when woken."""

    name = "faulty"

    def __init__(self, hold: bool) -> None:
        super().__init__(None)
        self.hold = hold

    def handle_uri_clean(self, request):
        if self.hold:
            return WAIT
        raise KeyError("a module's own bug")

    def handle_subrequest(self, request):
        raise ValueError("a module's own bug, once woken")


VALUES = {"server.document-root": "/nonexistent", "server.force-lowercase-filenames": False,
          "server.follow-symlink": True, "server.error-handler-404": "",
          "server.error-handler": "", "server.errorfile-prefix": ""}


@pytest.fixture(autouse=True)
def log_to_stderr(monkeypatch):
    """The error log on stderr, whatever tests before set it to."""
    monkeypatch.setattr(log, "_default", log.ErrorLog())


def _request():
    request = detached_request(VALUES)
    request.uri_path = "/x"
    request.keep_alive = True
    return request


def test_a_hook_that_raises_answers_500_and_ends_keep_alive(capfd):
    request = _request()
    assert Pipeline([_Faulty(hold=False)], replay=False).handle(request)
    assert request.response.status == 500
    assert not request.keep_alive
    assert "a module's own bug" in capfd.readouterr().err


def test_a_held_request_whose_module_raises_when_woken_answers_500(capfd):
    request = _request()
    pipeline = Pipeline([_Faulty(hold=True)], replay=False)
    assert not pipeline.handle(request)          # held
    assert pipeline.resume(request)
    assert request.response.status == 500 and request.handler is None
    assert not request.keep_alive
    assert "once woken" in capfd.readouterr().err
