"""mod_magnet's Python scripts beside its Lua scripts: the same behaviour written in
each language (headers, bodies, lighty.c, restart, error, runaway loop, reload) gives
the same answers from a real worker; and the per-call cost of a trivial script in
each language (loadtests/magnet_microbench.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from server_util import REPO, WorkerProcess, config_text

pytest.importorskip("lupa")

LUA = """
local r, c = lighty.r, lighty.c
local name = r.req_attr["uri.path"]:match("^/%a+/(.*)$")
if name == "headers" then
  r.resp_header["X-Seen"] = r.req_header["X-Value"] or "none"
  r.resp_header["X-Md5"] = c.md("md5", "abc")
  r.resp_header["X-B64"] = c.b64enc("hi?")
  r.resp_header["X-Query"] = r.req_attr["uri.query"]
  r.req_env["GREETING"] = "hello"
  r.resp_header["X-Env"] = r.req_env["GREETING"]
  r.resp_body.set({"headers\\n"})
  return 200
elseif name == "body" then
  r.resp_header["Content-Type"] = "text/plain"
  r.resp_body.set({"one ", {filename = r.req_attr["physical.doc-root"] .. "/index.html"}})
  r.resp_body.add("two\\n")
  return 201
elseif name == "restart" then
  r.req_attr["uri.path"] = "/index.html"
  return lighty.RESTART_REQUEST
elseif name == "error" then
  error("raised on purpose")
elseif name == "loop" then
  while true do end
end
"""
PYTHON = """
def handle(r, c):
    name = r.req_attr["uri.path"].split("/", 2)[2]
    if name == "headers":
        r.resp_header["X-Seen"] = r.req_header.get("X-Value", "none")
        r.resp_header["X-Md5"] = c.md("md5", "abc")
        r.resp_header["X-B64"] = c.b64enc("hi?")
        r.resp_header["X-Query"] = r.req_attr["uri.query"]
        r.req_env["GREETING"] = "hello"
        r.resp_header["X-Env"] = r.req_env["GREETING"]
        r.resp_body.set(["headers\\n"])
        return 200
    if name == "body":
        r.resp_header["Content-Type"] = "text/plain"
        r.resp_body.set(["one ", {"filename": r.req_attr["physical.doc-root"] + "/index.html"}])
        r.resp_body.add("two\\n")
        return 201
    if name == "restart":
        r.req_attr["uri.path"] = "/index.html"
        return RESTART_REQUEST
    if name == "error":
        raise RuntimeError("raised on purpose")
    if name == "loop":
        while True:
            try:
                while True:
                    pass
            except Exception:
                pass
"""
VERSIONS = {"lua": 'lighty.r.resp_body.set({"%s\\n"}) return 200\n',
            "py": 'def handle(r, c):\n    r.resp_body.set("%s\\n")\n    return 200\n'}
START = {"lua": """
lighty.r.resp_header["X-Status-Seen"] = tostring(lighty.r.req_item["http_status"])
if lighty.r.req_attr["uri.path"]:match("teapot") then return 418 end
""", "py": """
def handle(r, c):
    r.resp_header["X-Status-Seen"] = str(r.req_item["http_status"])
    if "teapot" in r.req_attr["uri.path"]:
        return 418
"""}
LANGUAGES = ("lua", "py")
COMPARED = ("X-Seen", "X-Md5", "X-B64", "X-Query", "X-Env", "Content-Type")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("magnet_python")
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text("index\n")
    (tmp_path / "same.lua").write_text(LUA)
    (tmp_path / "same.py").write_text(PYTHON)
    for language, source in VERSIONS.items():
        (tmp_path / f"version.{language}").write_text(source % "one")
        (tmp_path / f"start.{language}").write_text(START[language])
        (docroot / f"s{language}").mkdir()
        (docroot / f"s{language}" / "teapot.html").write_text("tea\n")
    (tmp_path / "syntax.py").write_text("def handle(r, c)\n")
    (tmp_path / "nohandle.py").write_text("x = 1\n")
    blocks = "\n".join(f"""
$HTTP["url"] =~ "^/{language}/" {{
    magnet.attract-physical-path-to = ("{tmp_path}/same.{language}")
}}
$HTTP["url"] =~ "^/v{language}/" {{
    magnet.attract-raw-url-to = ("{tmp_path}/version.{language}")
}}
$HTTP["url"] =~ "^/s{language}/" {{
    magnet.attract-response-start-to = ("{tmp_path}/start.{language}")
}}""" for language in LANGUAGES)
    conf = tmp_path / "magnet.conf"
    conf.write_text(config_text(docroot, blocks + f"""
$HTTP["url"] == "/syntax" {{ magnet.attract-raw-url-to = ("{tmp_path}/syntax.py") }}
$HTTP["url"] == "/nohandle" {{ magnet.attract-raw-url-to = ("{tmp_path}/nohandle.py") }}
""", modules=("mod_magnet",)))
    return conf


@pytest.fixture(scope="module")
def worker(site: Path):
    with WorkerProcess(site) as running:
        yield running


def _answers(worker: WorkerProcess, path: str) -> dict[str, tuple]:
    answers = {}
    for language in LANGUAGES:
        status, headers, body = worker.get(f"/{language}/{path}", X_Value="given")
        answers[language] = (status, body, {name: headers.get(name) for name in COMPARED})
    return answers


def test_headers_and_helpers_agree(worker: WorkerProcess) -> None:
    answers = _answers(worker, "headers?a=1")
    assert answers["py"] == answers["lua"]
    status, body, headers = answers["py"]
    assert (status, body) == (200, b"headers\n")
    assert headers["X-Seen"] == "given" and headers["X-Env"] == "hello"
    assert headers["X-Md5"] == "900150983CD24FB0D6963F7D28E17F72"
    assert (headers["X-B64"], headers["X-Query"]) == ("aGk/", "a=1")


def test_bodies_with_file_parts_agree(worker: WorkerProcess) -> None:
    answers = _answers(worker, "body")
    assert answers["py"] == answers["lua"]
    assert answers["py"][:2] == (201, b"one index\ntwo\n")


def test_restart_agrees(worker: WorkerProcess) -> None:
    answers = _answers(worker, "restart")
    assert answers["py"] == answers["lua"]
    assert answers["py"][:2] == (200, b"index\n")


def test_script_going_on_serves_the_file(worker: WorkerProcess) -> None:
    assert worker.get("/py/none")[0] == worker.get("/lua/none")[0] == 404


def test_response_start_scripts_agree(worker: WorkerProcess) -> None:
    answers = {}
    for language in LANGUAGES:
        for name in ("teapot.html", "absent.html"):
            status, headers, body = worker.get(f"/s{language}/{name}")
            answers.setdefault(language, []).append(
                (status, headers.get("X-Status-Seen"), body if status == 418 else b""))
    assert answers["py"] == answers["lua"]
    assert answers["py"] == [(418, "200", b"tea\n"), (404, "404", b"")]


def test_runaway_loop_is_stopped_in_both(worker: WorkerProcess) -> None:
    for language in LANGUAGES:
        started = time.monotonic()
        assert worker.get(f"/{language}/loop")[0] == 500, language
        assert time.monotonic() - started < 5, language    # bounded: never a hang
        assert worker.get("/index.html")[:3:2] == (200, b"index\n"), language


def test_errors_are_500_and_logged_with_file_and_line(site: Path) -> None:
    worker = WorkerProcess(site)
    try:
        assert worker.get("/lua/error")[0] == worker.get("/py/error")[0] == 500
        assert worker.get("/py/loop")[0] == 500
        assert worker.get("/syntax")[0] == 500
        assert worker.get("/nohandle")[0] == 500
        assert worker.get("/index.html")[0] == 200
    finally:
        worker.process.send_signal(15)
        _, err = worker.process.communicate(timeout=10)
    assert "..\"]:22: raised on purpose" in err      # Lua shortens the chunk name
    assert f'py:   File "{site.parent}/same.py", line 22, in handle' in err
    assert "py: RuntimeError: raised on purpose" in err
    assert "ScriptOverran: script ran past its time budget of 1.0 s" in err
    assert "syntax.py failed:" in err and "py: SyntaxError:" in err
    assert "nohandle.py failed: it defines no handle(r, c)" in err


def test_changed_scripts_are_reloaded(site: Path) -> None:
    with WorkerProcess(site) as worker:
        for language in LANGUAGES:
            assert worker.get(f"/v{language}/x")[2] == b"one\n"
            script = site.parent / f"version.{language}"
            script.write_text(VERSIONS[language] % "two")
            later = time.time() + 5
            os.utime(script, (later, later))
        deadline = time.monotonic() + 5       # the stat cache looks again within ~1 s
        bodies: list[bytes] = []
        while time.monotonic() < deadline and bodies != [b"two\n", b"two\n"]:
            bodies = [worker.get(f"/v{language}/x")[2] for language in LANGUAGES]
            time.sleep(0.1)
        assert bodies == [b"two\n", b"two\n"]


def test_per_call_cost_of_a_trivial_script() -> None:
    sys.path.insert(0, str(REPO / "loadtests"))
    try:
        from magnet_microbench import measure
    finally:
        sys.path.remove(str(REPO / "loadtests"))
    figures = measure(2000)
    print("per call, us:", {name: round(value, 2) for name, value in figures.items()})
    assert set(figures) == {"lua", "py", "time budget"}
