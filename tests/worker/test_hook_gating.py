"""Hooks a module declares inactive without a directive (Module.active_when): the core
calls them only for requests whose settings give that directive a value."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import worker.modules
from server_util import detached_request
from worker.handler import _GATED, Pipeline
from worker.module import Module

SCRIPTS = "test.scripts"


class _Recording(Module):
    """Answers 204 from its physical hook, which needs SCRIPTS; notes each call."""

    name = "recording"
    active_when = {"handle_physical": SCRIPTS, "handle_response_start": SCRIPTS}

    def __init__(self) -> None:
        super().__init__(None)
        self.calls: list[str] = []

    def handle_physical(self, request):
        self.calls.append("physical")
        return 204

    def handle_response_start(self, request):
        self.calls.append("response_start")


def _answer(module: _Recording, scripts: tuple[str, ...]) -> int:
    request = detached_request({"server.document-root": "/nonexistent",
                                "server.force-lowercase-filenames": False,
                                "server.follow-symlink": True,
                                "server.error-handler-404": "", "server.error-handler": "",
                                "server.errorfile-prefix": "", SCRIPTS: scripts})
    request.uri_path = "/x"
    Pipeline([module], replay=False).handle(request)
    return request.response.status


def test_a_gated_hook_runs_only_where_its_directive_has_a_value():
    module = _Recording()
    assert _answer(module, ("a.lua",)) == 204
    assert module.calls == ["physical", "response_start"]
    module.calls.clear()
    assert _answer(module, ()) == 404          # the core's own answer: no file
    assert module.calls == []


def test_every_module_gates_only_hooks_it_has_on_directives_it_declares():
    for info in pkgutil.iter_modules(worker.modules.__path__):
        file = importlib.import_module(f"worker.modules.{info.name}")
        module = getattr(file, "Module", None)
        if not inspect.isclass(module) or not issubclass(module, Module):
            continue
        declared = {d.name for d in module.directives}
        for hook, key in module.active_when.items():
            assert hook in _GATED and hook in module.hooks(), (info.name, hook)
            assert key in declared, (info.name, key)
