"""mod_magnet in a real worker: scripts that loop, allocate or fail are contained
(500, logged with Lua's traceback) and the worker goes on serving; scripts reload when
their file changes; restarts are bounded; the response-start hook changes the head;
the answer cache never replays an answer a script decided."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from server_util import WorkerProcess, config_text

pytest.importorskip("lupa")

HOSTILE = """
local path = lighty.r.req_attr["uri.path"]
if path == "/loop" then while true do end end
if path == "/pcall-loop" then
  while true do pcall(function() while true do end end) end
end
if path == "/coroutine-loop" then
  local co = coroutine.wrap(function() while true do end end)
  while true do pcall(co) end
end
if path == "/unhook" then
  if debug.sethook then debug.sethook() end
  while true do end
end
if path == "/memory" then
  local t = {}
  for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end
end
if path == "/error" then error("raised on purpose") end
if path == "/restart-loop" then return lighty.RESTART_REQUEST end
if path == "/nonint" then return {} end
if path == "/python" then return python == nil and 204 or 200 end
if path == "/withheld" then
  for _, name in ipairs({"sethook", "gethook", "getregistry", "setupvalue", "upvaluejoin",
                         "setlocal"}) do
    if debug[name] then return 200 end
  end
  return os.exit == nil and 204 or 200
end
if path == "/legacy-header-loop" then   -- run as the script ends, under its budget too
  lighty.header = setmetatable({}, {__pairs = function() while true do end end})
end
if path == "/legacy-content-loop" then
  lighty.content = {setmetatable({}, {__index = function() while true do end end})}
  return 200
end
lighty.r.resp_header["X-Seen"] = lighty.r.req_header["X-Value"] or "none"
"""
HEADERS = """
local h = lighty.r.resp_header
h["X-A"] = "one"
h["X-B"] = "two"
h["X-A"] = nil
h["X-C"] = 3
lighty.r.resp_body.set({(h["X-B"] or "none") .. "\\n"})
h["X-B"] = "three"
lighty.header = {["X-D"] = "legacy", ["X-B"] = "four"}
if lighty.r.req_attr["uri.query"] == "fail" then error("after the writes") end
return 200
"""
RESPONSE_START = """
lighty.r.resp_header["X-Status-Seen"] = tostring(lighty.r.req_item["http_status"])
if lighty.r.req_attr["uri.path"] == "/teapot.html" then return 418 end
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("magnet")
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text("index\n")
    (docroot / "teapot.html").write_text("tea\n")
    (tmp_path / "hostile.lua").write_text(HOSTILE)
    (tmp_path / "start.lua").write_text(RESPONSE_START)
    (tmp_path / "syntax.lua").write_text("if then\n")
    (tmp_path / "headers.lua").write_text(HEADERS)
    (tmp_path / "print.lua").write_text('print("printed", 1, nil) return 204\n')
    (tmp_path / "version.lua").write_text('lighty.r.resp_body.set({"one\\n"}) return 200\n')
    conf = tmp_path / "magnet.conf"
    conf.write_text(config_text(docroot, f"""
$HTTP["url"] =~ "^/v/" {{
    magnet.attract-raw-url-to = ("{tmp_path}/version.lua")
}} else {{
    magnet.attract-physical-path-to = ("{tmp_path}/hostile.lua")
    magnet.attract-response-start-to = ("{tmp_path}/start.lua")
}}
$HTTP["url"] == "/syntax" {{ magnet.attract-raw-url-to = ("{tmp_path}/syntax.lua") }}
$HTTP["url"] == "/headers" {{ magnet.attract-raw-url-to = ("{tmp_path}/headers.lua") }}
$HTTP["url"] == "/print" {{ magnet.attract-raw-url-to = ("{tmp_path}/print.lua") }}
$HTTP["url"] == "/absent" {{ magnet.attract-raw-url-to = ("{tmp_path}/absent.lua") }}
""", modules=("mod_magnet",)))
    return conf


@pytest.fixture(scope="module")
def worker(site: Path):
    with WorkerProcess(site) as running:
        yield running


def test_hostile_scripts_are_stopped_and_the_worker_serves_on(worker: WorkerProcess) -> None:
    for path in ("/loop", "/pcall-loop", "/coroutine-loop", "/unhook", "/legacy-header-loop",
                 "/legacy-content-loop", "/memory"):
        started = time.monotonic()
        status, _, _ = worker.get(path)
        assert status == 500, path
        assert time.monotonic() - started < 5, path     # bounded: never a hang
        status, headers, body = worker.get("/index.html", X_Value="after")
        assert (status, body, headers["X-Seen"]) == (200, b"index\n", "after"), path


def test_script_error_is_500_and_logged_with_the_traceback(site: Path) -> None:
    worker = WorkerProcess(site)
    try:
        assert worker.get("/error")[0] == 500
        assert worker.get("/nonint")[0] == 404     # a non-integer result goes on
        assert worker.get("/syntax")[0] == 500
        assert worker.get("/syntax")[0] == 500     # still broken: the same reason
        assert worker.get("/absent")[0] == 500
        assert worker.get("/print")[0] == 204
    finally:
        worker.process.send_signal(15)
        _, err = worker.process.communicate(timeout=10)
    assert "\"]:19: raised on purpose" in err     # the script's line, as Lua says it
    assert "lua: stack traceback:" in err
    assert "unexpected non-integer return type: table" in err
    assert err.count("\"]:1: unexpected symbol near 'then'") == 2
    assert "absent.lua failed: No such file or directory" in err
    assert "(lua-print) printed\t1\tnil" in err


def test_response_header_writes_apply_in_order(worker: WorkerProcess) -> None:
    """Writes, a removal, a read that sees the writes before it, the older interface's
    table last; a script that fails after its writes keeps them, as they were made."""
    status, headers, body = worker.get("/headers")
    assert (status, body) == (200, b"two\n")
    assert "X-A" not in headers
    assert (headers["X-B"], headers["X-C"], headers["X-D"]) == ("four", "3", "legacy")
    status, headers, _ = worker.get("/headers?fail")
    assert (status, headers.get("X-B"), headers.get("X-C"), headers.get("X-D")) == \
        (500, "three", "3", None)


def test_restart_loop_ends_in_500(worker: WorkerProcess) -> None:
    assert worker.get("/restart-loop")[0] == 500


def test_scripts_see_no_python_bridge(worker: WorkerProcess) -> None:
    assert worker.get("/python")[0] == 204


def test_scripts_cannot_reach_the_budget_nor_end_the_worker(worker: WorkerProcess) -> None:
    assert worker.get("/withheld")[0] == 204


def test_response_start_script_changes_the_head(worker: WorkerProcess) -> None:
    status, headers, body = worker.get("/index.html")
    assert (status, headers["X-Status-Seen"]) == (200, "200")
    status, headers, body = worker.get("/teapot.html")
    assert (status, body) == (418, b"tea\n")


def test_changed_script_is_reloaded(site: Path) -> None:
    script = site.parent / "version.lua"
    with WorkerProcess(site) as worker:
        assert worker.get("/v/x")[2] == b"one\n"
        script.write_text('lighty.r.resp_body.set({"two\\n"}) return 200\n')
        later = time.time() + 5
        os.utime(script, (later, later))
        deadline = time.monotonic() + 5       # the stat cache looks again within ~1 s
        body = b""
        while time.monotonic() < deadline and body != b"two\n":
            body = worker.get("/v/x")[2]
            time.sleep(0.1)
        assert body == b"two\n"


def test_answers_a_script_decided_are_not_replayed(worker: WorkerProcess) -> None:
    seen = [worker.get("/index.html", X_Value=str(n))[1]["X-Seen"] for n in range(4)]
    assert seen == ["0", "1", "2", "3"]
