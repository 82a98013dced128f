"""mod_scgi through a real worker in front of the WSGI app of gw_app.py: under flup
(SCGI), under uwsgi speaking uwsgi (`scgi.protocol = "uwsgi"`) and SCGI.  Layouts,
bodies with a length and chunked, the backend's own status, X-Sendfile, 502 / 503 /
504, and the request framing itself (netstring, uwsgi packet) checked byte for byte."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from gw_backends import backends_in, flup, uwsgi, variables
from server_util import WorkerProcess, config_text
from worker.modules.mod_scgi import scgi_request, uwsgi_request

BACKENDS = ("flup", "uwsgi-uwsgi", "uwsgi-scgi")


def scgi_config(sockets: Path, sendable: Path) -> str:
    def hosts(name: str, extra: str = "") -> str:
        return f'( ( "socket" => "{sockets}/{name}.sock", "check-local" => "disable"{extra} ) )'
    return f"""
scgi.server = (
  "/flup/" => {hosts("flup")},
  "/uwsgi-scgi/" => {hosts("uwsgi-scgi")},
  "/slow/" => {hosts("flup", ', "read-timeout" => 1')},
  "/send/" => {hosts("flup", f', "x-sendfile" => "enable", "x-sendfile-docroot" => ( "{sendable}" )')},
  "/down/" => {hosts("nobody")},
  "/garbage/" => {hosts("garbage")},
  ".scgi" => {hosts("flup")},
)
scgi.map-extensions = ( ".sc" => ".scgi" )
$HTTP["url"] =^ "/uwsgi-uwsgi/" {{
  scgi.server = ( "/uwsgi-uwsgi/" => {hosts("uwsgi-uwsgi")} )
  scgi.protocol = "uwsgi"
}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("scgi")
    sendable = base / "sendable"
    sendable.mkdir()
    (sendable / "file.txt").write_text("sent by X-Sendfile\n")
    docroot = base / "www"
    docroot.mkdir()
    conf = base / "scgi.conf"
    with backends_in("scgi-test") as (sockets, backends):
        conf.write_text(config_text(docroot, scgi_config(sockets, sendable), ("mod_scgi",)))
        backends.append(flup("scgi", f"{sockets}/flup.sock"))
        backends.append(flup("garbage", f"{sockets}/garbage.sock"))
        backends.append(uwsgi(f"{sockets}/uwsgi-uwsgi.sock", "uwsgi"))
        backends.append(uwsgi(f"{sockets}/uwsgi-scgi.sock", "scgi"))
        with WorkerProcess(conf) as worker:
            yield {"worker": worker, "sendable": sendable}


def test_the_scgi_netstring_has_content_length_first() -> None:
    data = scgi_request({"CONTENT_LENGTH": "5", "REQUEST_METHOD": "POST"})
    block = b"CONTENT_LENGTH\x005\x00REQUEST_METHOD\x00POST\x00SCGI\x001\x00"
    assert data == b"%d:%s," % (len(block), block)


def test_the_uwsgi_packet_has_sizes_little_endian() -> None:
    data = uwsgi_request({"A": "bc"})
    assert data == b"\x00\x07\x00\x00" + b"\x01\x00A\x02\x00bc"
    assert uwsgi_request({"BIG": "x" * 70_000}) is None
    assert struct.unpack("<H", uwsgi_request({"K": "v" * 300})[1:3])[0] == 2 + 1 + 2 + 300


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_with_path_info(site, backend) -> None:
    status, headers, body = site["worker"].get(f"/{backend}/x/y?a=1")
    env = variables(body)
    assert status == 200 and headers["X-App"] == "gw_app"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (f"/{backend}/x", "/y")
    assert env["REQUEST_URI"] == f"/{backend}/x/y?a=1" and env["QUERY_STRING"] == "a=1"


@pytest.mark.parametrize("backend", BACKENDS)
def test_post_body_and_own_status(site, backend) -> None:
    body = os.urandom(200_000)
    status, _, answer = site["worker"].request("POST", f"/{backend}/p?status=201", body=body)
    env = variables(answer)
    assert status == 201 and env["BODY"] == f"200000 {hashlib.md5(body).hexdigest()}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunked_post(site, backend) -> None:
    body = os.urandom(90_000)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    raw = site["worker"].raw(f"POST /{backend}/c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n".encode() + chunked)
    env = variables(raw.partition(b"\r\n\r\n")[2])
    assert raw.startswith(b"HTTP/1.1 200") and env["CONTENT_LENGTH"] == "90000"
    assert env["BODY"] == f"90000 {hashlib.md5(body).hexdigest()}"


def test_head_request(site) -> None:
    raw = site["worker"].raw(b"HEAD /flup/h HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"\r\n\r\n")


def test_x_sendfile(site) -> None:
    inside = site["sendable"] / "file.txt"
    assert site["worker"].get(f"/send/?sendfile={inside}")[::2] == (200, b"sent by X-Sendfile\n")
    assert site["worker"].get("/send/?sendfile=/etc/passwd")[0] == 403


def test_failures(site) -> None:
    worker = site["worker"]
    assert worker.get("/down/x")[0] == 503
    assert worker.get("/garbage/x")[0] == 502
    assert worker.get("/slow/?sleep=2.5")[0] == 504


def test_map_extensions(site) -> None:
    env = variables(site["worker"].get("/page.sc")[2])
    assert env["SCRIPT_NAME"] == "/page.sc"
