"""A Python WebDAV client (webdav4, over httpx) against mod_webdav's share: upload,
list, copy, move, lock (webdav4 has no LOCK of its own: its request() sends one, and
its own operations then meet the lock), download and delete.

webdav4's exists / info / isfile send PROPFIND without a Depth header, which RFC 4918
reads as infinity; lighttpd 1.4.69 answers that 403 (propfind-finite-depth) unless
`webdav.opts` enables "propfind-depth-infinity", and so does pylighttpd: the share
here enables it, as a share meant for this client must."""

from __future__ import annotations

import io
import re

import pytest

from server_util import WorkerProcess, config_text

webdav4_client = pytest.importorskip("webdav4.client")

LOCKINFO = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            '</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>webdav4</D:owner>'
            '</D:lockinfo>')
TOKEN = re.compile(r"<(urn:uuid:[^>]+)>")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("webdav_client")
    docroot = base / "www"
    (docroot / "dav").mkdir(parents=True)
    conf = base / "webdav.conf"
    conf.write_text(config_text(docroot, f"""
$HTTP["url"] =^ "/dav/" {{
    webdav.activate = "enable"
    webdav.sqlite-db-name = "{base}/webdav.db"
    webdav.opts = ("propfind-depth-infinity" => "enable")
}}""", ("mod_webdav", "mod_staticfile")))
    with WorkerProcess(conf) as worker:
        dav = webdav4_client.Client(f"http://127.0.0.1:{worker.port}/dav/", timeout=10,
                                    retry=False)
        try:
            yield dav, docroot / "dav"
        finally:
            dav.http.close()


def _names(dav, path: str) -> set[str]:
    return {entry["name"] for entry in dav.ls(path)}


def test_upload_list_and_download(client) -> None:
    dav, share = client
    dav.mkdir("docs")
    dav.upload_fileobj(io.BytesIO(b"hello webdav\n"), "docs/hello.txt")
    dav.upload_fileobj(io.BytesIO(b"x" * 100_000), "docs/big.bin")
    assert (share / "docs" / "hello.txt").read_bytes() == b"hello webdav\n"
    assert _names(dav, "docs") == {"docs/hello.txt", "docs/big.bin"}
    assert dav.isdir("docs") and dav.isfile("docs/hello.txt")
    assert dav.content_length("docs/big.bin") == 100_000
    assert dav.etag("docs/hello.txt")
    received = io.BytesIO()
    dav.download_fileobj("docs/hello.txt", received)
    assert received.getvalue() == b"hello webdav\n"
    with pytest.raises(webdav4_client.ResourceAlreadyExists):
        dav.upload_fileobj(io.BytesIO(b"again"), "docs/hello.txt")
    dav.upload_fileobj(io.BytesIO(b"again"), "docs/hello.txt", overwrite=True)
    assert (share / "docs" / "hello.txt").read_bytes() == b"again"


def test_copy_move_and_delete(client) -> None:
    dav, share = client
    dav.mkdir("tree")
    dav.upload_fileobj(io.BytesIO(b"leaf"), "tree/leaf.txt")
    dav.copy("tree", "copied")
    assert (share / "copied" / "leaf.txt").read_bytes() == b"leaf"
    dav.move("copied/leaf.txt", "moved.txt")
    assert not dav.exists("copied/leaf.txt") and dav.isfile("moved.txt")
    dav.move("tree", "renamed")
    assert _names(dav, "renamed") == {"renamed/leaf.txt"} and not dav.exists("tree")
    for path in ("renamed", "copied", "moved.txt"):
        dav.remove(path)
        assert not dav.exists(path)
    with pytest.raises(webdav4_client.ResourceNotFound):
        dav.remove("moved.txt")


def test_lock_holds_off_the_client_until_unlocked(client) -> None:
    dav, share = client
    dav.upload_fileobj(io.BytesIO(b"locked"), "locked.txt")
    answer = dav.request("LOCK", "locked.txt", content=LOCKINFO,
                         headers={"Timeout": "Second-60", "Content-Type": "application/xml"})
    assert answer.status_code == 200
    token = TOKEN.search(answer.headers["Lock-Token"]).group(1)
    assert "<D:owner>webdav4</D:owner>" in answer.text
    with pytest.raises(webdav4_client.ResourceLocked):
        dav.remove("locked.txt")
    with pytest.raises(webdav4_client.ResourceLocked):
        dav.move("locked.txt", "elsewhere.txt")
    assert (share / "locked.txt").read_bytes() == b"locked"
    answer = dav.request("UNLOCK", "locked.txt", headers={"Lock-Token": f"<{token}>"})
    assert answer.status_code == 204
    dav.remove("locked.txt")
    assert not (share / "locked.txt").exists()
