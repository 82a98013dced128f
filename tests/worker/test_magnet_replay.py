"""mod_magnet and the answer cache: a static answer a Lua script had a part in is
replayed only when every run for it was repeatable (it read only what the cache keys
answers on and kept no state between runs); the views that tell a script's writes to
shared tables leave the scripts' Lua working as before."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lupa")

from master.configload import load  # noqa: E402
from server_util import detached_request  # noqa: E402
from worker.magnet_runtime import Script, ScriptFailed  # noqa: E402
from worker.request import Response  # noqa: E402
from worker.server import Server  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SETS_HEADER = 'lighty.r.resp_header["X-Magnet"] = "1"\n'


def _server(tmp_path: Path, script: str, name: str) -> Server:
    """An in-process worker serving a.txt and b.txt, its physical-path script `script`."""
    docroot = tmp_path / "www"
    docroot.mkdir(exist_ok=True)
    for file in ("a.txt", "b.txt"):
        (docroot / file).write_text(file)
    (tmp_path / name).write_text(script)
    conf = tmp_path / "replay.conf"
    conf.write_text(f'server.document-root = "{docroot}"\nserver.port = 80\n'
                    'server.modules = ("mod_magnet", "mod_staticfile")\n'
                    f'magnet.attract-physical-path-to = ("{tmp_path / name}")\n')
    return Server(load(str(conf)), [])


def _answers(server: Server, paths: tuple[str, ...]) -> list[bytes]:
    """GET each of `paths` in turn on one connection: the answers."""
    client, end = socket.socketpair()
    connection = server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
    answers = []
    for count, path in enumerate(paths, 1):
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        deadline = time.monotonic() + 5
        while connection.requests_done < count or connection.out.chunks:
            assert time.monotonic() < deadline
            server.loop.run_once(0.01)
        answer = client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(path[1:].encode())
        answers.append(answer)
    return answers


def _kept_after(tmp_path: Path, script: str, name: str = "s.lua") -> int:
    """GET /a.txt once, then /b.txt twice: the answers the cache kept."""
    server = _server(tmp_path, script, name)
    try:
        _answers(server, ("/a.txt", "/b.txt", "/b.txt"))
        return len(server.pipeline.answers.entries)
    finally:
        server.close_all()


def test_a_script_that_reads_only_the_url_has_its_answer_kept(tmp_path: Path) -> None:
    script = ('if lighty.r.req_attr["uri.path"] == "/b.txt" then\n'
              '  lighty.r.resp_header["X-B"] = ("%s-%d"):format(string.upper("b"), 1)\n'
              '  lighty.r.resp_header["X-N"] = tostring(42)\nend\n' + SETS_HEADER)
    assert _kept_after(tmp_path, script) == 1


def test_a_kept_answer_is_replayed_with_the_scripts_header(tmp_path: Path) -> None:
    server = _server(tmp_path, SETS_HEADER, "s.lua")
    runs = []
    module = next(m for m in server.pipeline.modules if m.name == "magnet")
    stat = module.cache.stat       # looked at once for each script run (compiled: no
    module.cache.stat = lambda path: runs.append(path) or stat(path)   # method to wrap)
    try:
        answers = _answers(server, ("/a.txt",) * 4)
    finally:
        server.close_all()
    assert all(b"\r\nX-Magnet: 1\r\n" in answer for answer in answers)
    assert len(runs) == 2          # kept the second time, replayed the third and fourth


@pytest.mark.parametrize("script", [
    'lighty.r.resp_header["X-T"] = tostring(os.time())',
    'lighty.r.resp_header["X-T"] = tostring(os.clock())',
    'lighty.r.resp_header["X-R"] = tostring(math.random(10))',
    'lighty.r.resp_header["X-T"] = tostring(lighty.c.time())',
    'lighty.r.resp_header["X-R"] = tostring(lighty.c.rand())',
    'lighty.r.resp_header["X-A"] = lighty.r.req_header["User-Agent"] or "none"',
    'for k, v in pairs(lighty.r.req_header) do end',
    'lighty.r.resp_header["X-IP"] = lighty.r.req_attr["request.remote-ip"]',
    'lighty.r.resp_header["X-E"] = lighty.r.req_env["HOME"] or "none"',
    'lighty.r.resp_header["X-N"] = tostring(lighty.r.req_item["bytes_in"])',
    'print("each request")',
    'local f = io.open("/dev/null") if f then f:close() end',
    'lighty.r.resp_header["X-Address"] = tostring({})',
    'lighty.r.resp_header["X-Address"] = string.format("%p", {})',
    'lighty.r.resp_header["X-Address"] = ("%s"):format(function() end)',
    'io.stderr:write("")',
])
def test_a_run_that_reads_what_the_key_does_not_hold_is_not_kept(
        tmp_path: Path, script: str) -> None:
    assert _kept_after(tmp_path, script + "\n" + SETS_HEADER) == 0


def test_reading_host_is_keyed(tmp_path: Path) -> None:
    script = 'lighty.r.resp_header["X-H"] = lighty.r.req_header["Host"]\n'
    assert _kept_after(tmp_path, script) == 1


@pytest.mark.parametrize("write", [
    "_G.seen = true",
    "string.seen = true",
    'rawset(_G, "seen", true)',
    'load("seen = true")()',
    "lighty.r.seen = true",
    "package.loaded.seen = true",
    "setmetatable(_G, {})",
    'getmetatable("").__index.seen = true',
    'require("string")',
])
def test_a_script_that_keeps_state_between_runs_is_never_kept_again(
        tmp_path: Path, write: str) -> None:
    """Only the first request (/a.txt) writes: the later runs for /b.txt read the same
    state and write nothing, yet may have been shaped by it."""
    script = f'if lighty.r.req_attr["uri.path"] == "/a.txt" then {write} end\n' + SETS_HEADER
    assert _kept_after(tmp_path, script) == 0


def test_python_scripts_are_never_kept(tmp_path: Path) -> None:
    script = 'def handle(r, c):\n    r.resp_header["X-Magnet"] = "1"\n'
    assert _kept_after(tmp_path, script, "s.py") == 0


def _run_lua(tmp_path: Path, source: str) -> tuple[int, Response]:
    path = tmp_path / "views.lua"
    path.write_text(source)
    script = Script(str(path))
    script.load((0, 0, 0))
    request = detached_request()
    return script.run(request), request.response


@pytest.mark.parametrize("source", [
    "_G.x = 5 return (_G.x == 5 and x == 5) and 204 or 500",
    'local n = 0 for k, v in pairs(_G) do if k == "string" then n = v.upper("a") end end\n'
    'return n == "A" and 204 or 500',
    'return (rawget(_G, "string") == string and next(string) ~= nil) and 204 or 500',
    'setmetatable(_G, {__index = function(_, k) return "dflt" end})\n'
    'return (undefined_name == "dflt" and string.upper("a") == "A") and 204 or 500',
    'return (getmetatable(_G) == nil and ("a"):rep(2) == "aa") and 204 or 500',
    'local f = load("return string.lower(...)") return f("A") == "a" and 204 or 500',
    'lighty.r.resp_header["X"] = "1" return lighty.r.resp_header["X"] == "1" and 204 or 500',
    'table.insert(_G, 1) return (_G[1] == 1 and #_G == 1) and 204 or 500',
])
def test_the_views_leave_the_globals_working(tmp_path: Path, source: str) -> None:
    assert _run_lua(tmp_path, source)[0] == 204


@pytest.mark.parametrize("source", ["error(7)", "error({})", "error()"])
def test_an_error_value_that_is_no_string_still_fails_the_run(tmp_path: Path,
                                                              source: str) -> None:
    """A run's outcome comes back as one value, an integer for a status: an error
    object that is a number must not pass for one."""
    with pytest.raises(ScriptFailed):
        _run_lua(tmp_path, source)


def test_the_http_microbench_runs(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "loadtests"))
    try:
        from magnet_microbench import HTTP_CASES, measure_http
    finally:
        sys.path.remove(str(REPO / "loadtests"))
    figures = measure_http(rounds=5)
    print("per request, us:", {name: round(value, 1) for name, value in figures.items()})
    assert set(figures) == set(HTTP_CASES) and all(value > 0 for value in figures.values())
