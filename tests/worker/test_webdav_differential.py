"""Differential test of mod_webdav: Debian's lighttpd 1.4.69 (with lighttpd-mod-webdav)
and a pylighttpd worker serve one share with one config and one SQLite database (so
the tables are lighttpd's).  The same sequence of WebDAV requests runs against each,
lighttpd in `/dav/L/` and pylighttpd in `/dav/P/` so the two never see each other's
files, and the answers must agree on the status and the headers that matter.  Where
pylighttpd answers otherwise on purpose (RFC 4918 or RFC 9110 asks it), the step is in
KNOWN_DIFFERENCES with the reason, and the test checks that it still differs.
"""

from __future__ import annotations

import http.client
import os
import re

import pytest

from test_differential import LIGHTTPD, beside_lighttpd

MOD_WEBDAV = "/usr/lib/lighttpd/mod_webdav.so"
pytestmark = pytest.mark.skipif(
    not (os.access(LIGHTTPD, os.X_OK) and os.path.exists(MOD_WEBDAV)),
    reason="Debian's lighttpd and lighttpd-mod-webdav are not installed")

CONFIG = """
server.document-root = "{base}/www"
server.modules = ("mod_webdav", "mod_staticfile")
mimetype.assign = (".txt" => "text/plain", "" => "application/octet-stream")
webdav.activate = "enable"
webdav.sqlite-db-name = "{base}/webdav.db"
server.tag = "difftest"
"""
# headers compared by value; those of PRESENT only by presence (their values are
# the server's own: inodes, random tokens)
COMPARED = ("content-type", "allow", "dav", "ms-author-via", "location")
PRESENT = ("etag", "lock-token")
XML = {"Content-Type": "application/xml"}
LOCKINFO = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:{}/>'
            '</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>')
PROPSET = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
           '<Z:colour xmlns:Z="urn:z">blue</Z:colour></D:prop></D:set></D:propertyupdate>')
PROPGET = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
           '<Z:colour xmlns:Z="urn:z"/><D:getcontentlength/></D:prop></D:propfind>')

# name, method, path ({r}: the server's own root), headers, body
STEPS: list[tuple[str, str, str, dict[str, str], str | None]] = [
    ("options", "OPTIONS", "{r}/", {}, None),
    ("options-asterisk", "OPTIONS", "*", {}, None),
    ("mkcol", "MKCOL", "{r}/col/", {}, None),
    ("mkcol-again", "MKCOL", "{r}/col/", {}, None),
    ("mkcol-no-parent", "MKCOL", "{r}/none/col/", {}, None),
    ("mkcol-body", "MKCOL", "{r}/col2/", {"Content-Type": "text/plain"}, "body"),
    ("put-new", "PUT", "{r}/col/a.txt", {}, "hello"),
    ("put-again", "PUT", "{r}/col/a.txt", {}, "hello again"),
    ("put-no-parent", "PUT", "{r}/none/a.txt", {}, "x"),
    ("put-collection", "PUT", "{r}/col/", {}, "x"),
    ("put-range", "PUT", "{r}/col/a.txt", {"Content-Range": "bytes 0-0/*"}, "y"),
    ("get", "GET", "{r}/col/a.txt", {}, None),
    ("head-collection", "HEAD", "{r}/col/", {}, None),
    ("propfind-0", "PROPFIND", "{r}/col/", {"Depth": "0"}, None),
    ("propfind-1", "PROPFIND", "{r}/col/", {"Depth": "1"}, None),
    ("propfind-infinity", "PROPFIND", "{r}/col/", {"Depth": "infinity"}, None),
    ("propfind-no-depth", "PROPFIND", "{r}/col/", {}, None),
    ("propfind-depth-2", "PROPFIND", "{r}/col/", {"Depth": "2"}, None),
    ("propfind-missing", "PROPFIND", "{r}/col/missing", {"Depth": "0"}, None),
    ("propfind-malformed", "PROPFIND", "{r}/col/", {"Depth": "0", **XML}, "<D:propfind"),
    ("proppatch", "PROPPATCH", "{r}/col/a.txt", XML, PROPSET),
    ("proppatch-missing", "PROPPATCH", "{r}/col/nothing.txt", XML, PROPSET),
    ("propfind-named", "PROPFIND", "{r}/col/a.txt", {"Depth": "0", **XML}, PROPGET),
    ("copy", "COPY", "{r}/col/a.txt", {"Destination": "{r}/col/b.txt"}, None),
    # a Destination of raw UTF-8 octets (http.client sends each character as an octet)
    ("copy-raw-utf8-destination", "COPY", "{r}/col/a.txt",
     {"Destination": "{r}/col/r\u00c3\u00a9s.txt"}, None),
    ("get-raw-utf8-copy", "GET", "{r}/col/r%C3%A9s.txt", {}, None),
    ("copy-overwrite", "COPY", "{r}/col/a.txt", {"Destination": "{r}/col/b.txt"}, None),
    ("copy-no-overwrite", "COPY", "{r}/col/a.txt",
     {"Destination": "{r}/col/b.txt", "Overwrite": "F"}, None),
    ("copy-no-destination", "COPY", "{r}/col/a.txt", {}, None),
    ("copy-other-host", "COPY", "{r}/col/a.txt",
     {"Destination": "http://elsewhere.example{r}/col/c.txt"}, None),
    ("copy-no-parent", "COPY", "{r}/col/a.txt", {"Destination": "{r}/none/c.txt"}, None),
    ("copy-missing", "COPY", "{r}/col/zzz.txt", {"Destination": "{r}/col/c.txt"}, None),
    ("copy-body", "COPY", "{r}/col/a.txt", {"Destination": "{r}/col/e.txt"}, "x"),
    ("move-body", "MOVE", "{r}/col/a.txt", {"Destination": "{r}/col/e.txt", **XML}, "<x/>"),
    ("delete-body", "DELETE", "{r}/col/a.txt", {}, "x"),
    ("delete-missing-body", "DELETE", "{r}/col/zzz.txt", {}, "x"),
    ("unlock-body", "UNLOCK", "{r}/col/a.txt", {"Lock-Token": "<x>"}, "x"),
    ("move", "MOVE", "{r}/col/b.txt", {"Destination": "{r}/col/c.txt"}, None),
    ("copy-collection", "COPY", "{r}/col/", {"Destination": "{r}/col-copy/"}, None),
    ("move-collection", "MOVE", "{r}/col-copy/", {"Destination": "{r}/col-moved/"}, None),
    ("copy-collection-depth-0", "COPY", "{r}/col/",
     {"Destination": "{r}/col-shallow/", "Depth": "0"}, None),
    ("copy-collection-depth-1", "COPY", "{r}/col/",
     {"Destination": "{r}/col-one/", "Depth": "1"}, None),
    ("move-depth-0", "MOVE", "{r}/col-shallow/",
     {"Destination": "{r}/col-zero/", "Depth": "0"}, None),
    ("copy-bad-overwrite", "COPY", "{r}/col/a.txt",
     {"Destination": "{r}/col/d.txt", "Overwrite": "maybe"}, None),
    ("copy-into-itself", "COPY", "{r}/col/", {"Destination": "{r}/col/inner/"}, None),
    ("propfind-allprop", "PROPFIND", "{r}/col/", {"Depth": "1", **XML},
     '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'),
    ("propfind-propname", "PROPFIND", "{r}/col/a.txt", {"Depth": "0", **XML},
     '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'),
    ("delete-with-fragment", "DELETE", "{r}/col-moved/#part", {}, None),
    ("get-with-fragment", "GET", "{r}/col/a.txt#part", {}, None),
    ("delete-collection", "DELETE", "{r}/col-moved/", {}, None),
    ("delete-missing", "DELETE", "{r}/col-moved/", {}, None),
    ("lock", "LOCK", "{r}/col/a.txt", {"Depth": "0", "Timeout": "Second-60", **XML},
     LOCKINFO.format("exclusive")),
    ("put-locked", "PUT", "{r}/col/a.txt", {}, "no"),
    ("put-with-token", "PUT", "{r}/col/a.txt", {"If": "(<{token}>)"}, "yes"),
    ("lock-conflict", "LOCK", "{r}/col/a.txt", {"Depth": "0", **XML},
     LOCKINFO.format("shared")),
    ("lock-refresh", "LOCK", "{r}/col/a.txt", {"If": "(<{token}>)"}, None),
    ("lock-refresh-no-if", "LOCK", "{r}/col/a.txt", {}, None),
    ("lock-depth-1", "LOCK", "{r}/col/", {"Depth": "1", **XML}, LOCKINFO.format("shared")),
    ("delete-locked", "DELETE", "{r}/col/a.txt", {}, None),
    ("unlock-no-token", "UNLOCK", "{r}/col/a.txt", {}, None),
    ("unlock-wrong-token", "UNLOCK", "{r}/col/a.txt",
     {"Lock-Token": "<urn:uuid:00000000-0000-0000-0000-000000000000>"}, None),
    ("unlock", "UNLOCK", "{r}/col/a.txt", {"Lock-Token": "<{token}>"}, None),
    ("lock-unmapped", "LOCK", "{r}/col/new.txt", {"Depth": "0", **XML},
     LOCKINFO.format("exclusive")),
    ("unlock-unmapped", "UNLOCK", "{r}/col/new.txt", {"Lock-Token": "<{token}>"}, None),
    ("if-unknown-token", "PUT", "{r}/col/c.txt",
     {"If": "(<urn:uuid:00000000-0000-0000-0000-000000000000>)"}, "x"),
    ("if-malformed", "PUT", "{r}/col/c.txt", {"If": "garbage"}, "x"),
    ("lock-shared-collection", "LOCK", "{r}/col/", {"Depth": "infinity", **XML},
     LOCKINFO.format("shared")),
    ("delete-collection-locked", "DELETE", "{r}/col/", {}, None),
    # lighttpd's order of checks in COPY / MOVE / PUT / DELETE, and what a URL with a
    # trailing slash names
    ("mkcol-tree", "MKCOL", "{r}/tree/", {}, None),
    ("mkcol-sub", "MKCOL", "{r}/sub/", {}, None),
    ("put-tree-file", "PUT", "{r}/tree/f.txt", {}, "tree file"),
    ("copy-bad-overwrite-other-host", "COPY", "{r}/tree/f.txt",
     {"Destination": "http://elsewhere.example{r}/tree/g.txt", "Overwrite": "x"}, None),
    ("copy-missing-onto-itself", "COPY", "{r}/tree/none.txt",
     {"Destination": "{r}/tree/none.txt"}, None),
    ("copy-collection-without-slash", "COPY", "{r}/tree", {"Destination": "{r}/tree2/"},
     None),
    ("move-file-depth-1", "MOVE", "{r}/tree/f.txt",
     {"Destination": "{r}/tree/g.txt", "Depth": "1"}, None),
    ("copy-file-to-collection-url", "COPY", "{r}/tree/g.txt",
     {"Destination": "{r}/tree/new/"}, None),
    ("copy-file-into-collection", "COPY", "{r}/tree/g.txt", {"Destination": "{r}/sub"},
     None),
    ("get-copied-into", "GET", "{r}/sub/g.txt", {}, None),
    ("delete-file-with-slash", "DELETE", "{r}/tree/g.txt/", {}, None),
    ("propfind-file-with-slash", "PROPFIND", "{r}/tree/g.txt/", {"Depth": "0"}, None),
    ("proppatch-file-with-slash", "PROPPATCH", "{r}/tree/g.txt/", XML, PROPSET),
    ("put-no-parent-if-match", "PUT", "{r}/none/x.txt", {"If-Match": "*"}, "x"),
    ("move-file-onto-its-collection", "MOVE", "{r}/tree/g.txt", {"Destination": "{r}/tree/"},
     None),
    ("get-after-move-onto-its-collection", "GET", "{r}/tree/g.txt", {}, None),
    ("copy-collection-onto-itself", "COPY", "{r}/tree/", {"Destination": "{r}/tree"}, None),
    ("delete-sub", "DELETE", "{r}/sub/", {}, None),
    ("get-member-after-delete", "GET", "{r}/sub/g.txt", {}, None),
    # octets that are digits to str.isdigit() and not to lighttpd (a superscript two,
    # 0xB2, sent as latin-1): int() of one raised, a 500
    ("put-range-superscript", "PUT", "{r}/tree/h.txt", {"Content-Range": "bytes \u00b2-3/*"},
     "xy"),
    ("lock-timeout-superscript", "LOCK", "{r}/tree/h.txt",
     {"Depth": "0", "Timeout": "Second-\u00b2", **XML}, LOCKINFO.format("exclusive")),
    # Destination forms as lighttpd reads them ("=": sent as written): a path alone; a
    # network-path is a path; an authority must be the request's, as written; a
    # fragment is part of the name; a tab stays in it (urlsplit dropped it)
    ("put-move-source", "PUT", "{r}/tree/s.txt", {}, "s"),
    ("move-path-only", "MOVE", "{r}/tree/s.txt", {"Destination": "={r}/tree/s2.txt"}, None),
    ("move-network-path", "MOVE", "{r}/tree/s2.txt",
     {"Destination": "=//127.0.0.1{r}/tree/s3.txt"}, None),
    ("move-other-port", "MOVE", "{r}/tree/s2.txt",
     {"Destination": "=http://127.0.0.1:1{r}/tree/s3.txt"}, None),
    ("move-scheme-one-slash", "MOVE", "{r}/tree/s2.txt",
     {"Destination": "=http:/127.0.0.1{r}/tree/s3.txt"}, None),
    ("move-fragment", "MOVE", "{r}/tree/s2.txt", {"Destination": "{r}/tree/s#4.txt"}, None),
    ("get-fragment-name", "GET", "{r}/tree/s%234.txt", {}, None),
    ("move-tab", "MOVE", "{r}/tree/s%234.txt", {"Destination": "{r}/tree/s\t5.txt"}, None),
    ("get-tab-name", "GET", "{r}/tree/s%095.txt", {}, None),
]

KNOWN_DIFFERENCES = {
    "put-locked": "RFC 4918 9.10.6 and 16: a 423 says which precondition failed in an "
                  "XML body (lock-token-submitted); lighttpd 1.4.69 sends its HTML page",
    "delete-locked": "RFC 4918 16, as put-locked",
    "put-collection": "RFC 4918 9.7.2: a PUT to an existing collection is 405; lighttpd "
                      "1.4.69 says 400",
    "propfind-depth-2": "RFC 4918 10.2: Depth is 0, 1 or infinity, anything else is a "
                        "bad request (400); lighttpd 1.4.69 takes it for infinity (403)",
    "proppatch": "RFC 4918 9.2: PROPPATCH answers 207 Multi-Status with a propstat per "
                 "property; lighttpd 1.4.69 answers 204 when all succeeded",
    "copy-collection": "RFC 4918 9.8.5: 201 when the destination was created; lighttpd "
                       "1.4.69 answers 200",
    "move-collection": "RFC 4918 9.9.4, as copy-collection",
    "if-malformed": "RFC 4918 10.4 / RFC 9110: a malformed If header is 400; lighttpd "
                    "1.4.69 ignores it",
    "get-after-move-onto-its-collection": (
        "a file moved onto the collection it is in stays where it is; lighttpd 1.4.69 "
        "puts it into that collection under its own name, its own path, and unlinks it "
        "after the rename (webdav_copymove_file): the file is lost"),
    "copy-collection-without-slash": ("a collection named without its trailing slash is "
                                      "copied, as lighttpd 1.4.69 takes it for DELETE and "
                                      "PROPFIND; its COPY and MOVE answer 308, which "
                                      "clients such as webdav4 (httpx) do not follow"),
    "copy-collection-onto-itself": ("RFC 4918 9.8.5: 403 when source and destination are "
                                    "one resource; lighttpd 1.4.69 renames the collection "
                                    "onto itself and answers 200"),
    "delete-collection-locked": "RFC 4918 9.6.1 and 7: a collection whose member is "
                                "locked is not deleted without the lock's token (423); "
                                "lighttpd 1.4.69 deletes it",
}


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    base = tmp_path_factory.mktemp("davdiff")
    docroot = base / "www"
    for side in ("L", "P"):
        (docroot / "dav" / side).mkdir(parents=True)
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(base=base))
    with beside_lighttpd(conf) as (theirs, ours):
        yield run_steps(theirs, "/dav/L"), run_steps(ours, "/dav/P")


def run_steps(port: int, root: str) -> dict[str, dict]:
    """Each step's answer: its status and the compared headers."""
    found: dict[str, dict] = {}
    token = ""
    for name, method, path, headers, body in STEPS:
        sent = {key: value.replace("{r}", root).replace("{token}", token)
                for key, value in headers.items()}
        if "Destination" in sent and sent["Destination"].startswith("/"):
            sent["Destination"] = f"http://127.0.0.1:{port}{sent['Destination']}"
        elif "Destination" in sent and sent["Destination"].startswith("="):
            sent["Destination"] = sent["Destination"][1:]       # sent as written
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(method, path.replace("{r}", root),
                               body=body.encode() if body is not None else None,
                               headers=sent)
            response = connection.getresponse()
            response.read()
            got = {key.lower(): value for key, value in response.getheaders()}
        finally:
            connection.close()
        match = re.search(r"<([^>]+)>", got.get("lock-token", ""))
        if match:
            token = match.group(1)
        summary = {"status": response.status}
        summary.update({key: got.get(key) for key in COMPARED})
        if summary["location"]:                 # each server's own root aside
            summary["location"] = summary["location"].replace(root, "{r}")
        summary.update({key: key in got for key in PRESENT})
        found[name] = summary
    return found


@pytest.mark.parametrize("name", [step[0] for step in STEPS])
def test_same_answer_as_lighttpd(answers, name):
    theirs, ours = answers
    if name in KNOWN_DIFFERENCES:
        assert theirs[name] != ours[name], f"{name} no longer differs: " \
                                           f"{KNOWN_DIFFERENCES[name]}"
    else:
        assert ours[name] == theirs[name]


# without webdav.sqlite-db-name: no dead properties nor locks ({r}: each server's own
# folder, as STEPS)
WITHOUT_DB = [
    ("options", "OPTIONS", "{r}/", {}, None),
    ("proppatch", "PROPPATCH", "{r}/a.txt", XML, PROPSET),
    ("proppatch-missing", "PROPPATCH", "{r}/nothing.txt", XML, PROPSET),
    ("propfind", "PROPFIND", "{r}/a.txt", {"Depth": "0"}, None),
    ("put", "PUT", "{r}/b.txt", {}, "b"),
]


def test_without_a_database_as_lighttpd(tmp_path):
    """PROPPATCH is 405 (with the methods that remain, lighttpd's list), OPTIONS says
    so too; the rest works as with a database."""
    for side in ("L", "P"):
        (tmp_path / "www" / "dav" / side).mkdir(parents=True)
        (tmp_path / "www" / "dav" / side / "a.txt").write_text("a")
    conf = tmp_path / "common.conf"
    conf.write_text(CONFIG.format(base=tmp_path).replace(
        f'webdav.sqlite-db-name = "{tmp_path}/webdav.db"\n', ""))
    with beside_lighttpd(conf) as (theirs, ours):
        their, our = _answers(theirs, "/dav/L"), _answers(ours, "/dav/P")
    for name in ("proppatch", "proppatch-missing"):
        # a known difference: RFC 9110 15.5.6, a 405 MUST carry Allow; lighttpd 1.4.69
        # sets it, then its error page drops it
        assert (their[name].pop("allow"), our[name].pop("allow")) == (
            None, "GET, HEAD, PROPFIND, DELETE, MKCOL, PUT, MOVE, COPY")
    assert our == their
    assert our["proppatch"]["status"] == 405


def _answers(port: int, root: str) -> dict[str, dict]:
    found = {}
    for name, method, path, headers, body in WITHOUT_DB:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(method, path.replace("{r}", root),
                               body=body.encode() if body else None, headers=headers)
            response = connection.getresponse()
            response.read()
            got = {key.lower(): value for key, value in response.getheaders()}
        finally:
            connection.close()
        found[name] = {"status": response.status, **{key: got.get(key) for key in COMPARED}}
    return found
