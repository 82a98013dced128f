"""server.follow-symlink = "disable" under a race: a path that flips between a real
file (or directory) in the document root and a symlink to a secret outside it must
never serve the secret, whatever moment the flip happens.

A real worker over real sockets; a background process flips the path as fast as it can
while the client asks for it again and again (bounded in count and in time).  Each
answer may be the public file, a 403 or a 404 (the path is briefly absent while a
directory flips), but never a byte of the secret: not its contents, not its size (the
Content-Length of a HEAD), not its directory's listing, not as an error document.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from sites import start_worker

MARK = b"TOP-SECRET"
SECRET = MARK + b" contents outside the document root\n"
SECRET_NAME = "TOP-SECRET-listed-name.txt"
PUBLIC = b"public page inside the document root\n"
MAX_REQUESTS = 10000
MAX_SECONDS = 2.5        # spans a few stat cache ticks: its entries live a second
EXTRA = """
server.follow-symlink = "disable"
dir-listing.activate = "enable"
dir-listing.show-readme = "enable"
server.errorfile-prefix = "{docroot}/errors/e-"
server.stat-cache-engine = "{engine}"
"""


@pytest.fixture(params=["simple", "disable"])
def race_site(request, tmp_path: Path) -> Iterator:
    """A worker with follow-symlink off, with and without the stat cache."""
    extra = EXTRA.format(docroot=tmp_path / "www", engine=request.param)
    worker = start_worker(tmp_path, extra, modules=("mod_dirlisting", "mod_staticfile"))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "page.txt").write_bytes(SECRET)
    (secrets / SECRET_NAME).write_bytes(SECRET)
    docroot = worker.docroot
    (docroot / "page.txt").write_bytes(PUBLIC)
    (docroot / "d").mkdir()
    (docroot / "d" / "page.txt").write_bytes(PUBLIC)
    (docroot / "errors").mkdir()
    (docroot / "errors" / "e-404.html").write_bytes(PUBLIC)
    with worker:
        worker.secrets = secrets   # type: ignore[attr-defined]
        yield worker


def _flip_file(path: Path, secret: Path) -> Callable[[], None]:
    """One flip each way: `path` becomes a symlink to `secret`, then a regular file
    again.  Each is a hard link of a prepared twin renamed over `path` (atomic, so the
    path always exists, and far quicker than making a new symlink or file each time)."""
    link, regular = path.with_name(path.name + ".link"), path.with_name(path.name + ".real")
    fresh = path.with_name(path.name + ".new")
    os.symlink(secret, link)
    os.link(path, regular)

    def flip() -> None:
        for twin in (link, regular):
            os.link(twin, fresh, follow_symlinks=False)
            os.replace(fresh, path)
    return flip


def _flip_directory(path: Path, secrets: Path) -> Callable[[], None]:
    """One flip each way: the directory `path` gives way to a symlink to `secrets`, then
    comes back (a directory cannot be renamed over a symlink: the path is briefly
    absent in between)."""
    parked, link = path.with_name(path.name + ".real"), path.with_name(path.name + ".link")
    os.symlink(secrets, link)

    def flip() -> None:
        os.rename(path, parked)
        os.rename(link, path)
        os.rename(path, link)
        os.rename(parked, path)
    return flip


class Flipper:
    """Runs `flip` in a process of its own (a thread would wait for the client's turn
    at the interpreter lock and flip a few times a second) until stopped, or until
    MAX_SECONDS have passed should the test die first."""

    def __init__(self, flip: Callable[[], None]) -> None:
        context = multiprocessing.get_context("fork")
        self.halt = context.Event()
        self.flips = context.Value("l", 0)
        self.process = context.Process(target=self._run, args=(flip,), daemon=True)
        self.process.start()

    def _run(self, flip: Callable[[], None]) -> None:
        deadline = time.monotonic() + MAX_SECONDS + 5
        while not self.halt.is_set() and time.monotonic() < deadline:
            flip()
            self.flips.value += 1

    def stop(self) -> int:
        """Stops the flipping; the number of flips made."""
        self.halt.set()
        self.process.join(timeout=MAX_SECONDS + 10)
        return self.flips.value


def _hammer(worker, requests: tuple[tuple[str, str], ...], flip: Callable[[], None]) -> None:
    """Make `requests` (method, target) in turn while `flip` runs in another process;
    fails at the first answer that tells anything of the secret.  Every other request
    has a query of its own, so that it goes through the whole request path rather
    than a kept answer."""
    flipper = Flipper(flip)
    statuses: dict[int, int] = {}
    connection = worker.connection()
    deadline = time.monotonic() + MAX_SECONDS
    try:
        for count in range(MAX_REQUESTS):
            if time.monotonic() > deadline:
                break
            method, target = requests[count % len(requests)]
            try:
                plain = count // len(requests) % 2
                connection.request(method, target if plain else f"{target}?{count}")
                response = connection.getresponse()
                status, body = response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                connection = worker.connection()
                continue
            length = response.getheader("Content-Length")
            assert MARK not in body and not (status == 200 and length == str(len(SECRET))), \
                f"{method} {count} of {target} got {status}, the secret's: {body[:200]!r}"
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        connection.close()
        flips = flipper.stop()
    assert flips > 0 and sum(statuses.values()) > 100, statuses


def test_file_flipping_to_a_symlink_never_serves_the_secret(race_site):
    flip = _flip_file(race_site.docroot / "page.txt", race_site.secrets / "page.txt")
    _hammer(race_site, (("GET", "/page.txt"), ("HEAD", "/page.txt")), flip)


def test_directory_flipping_to_a_symlink_never_serves_the_secret(race_site):
    flip = _flip_directory(race_site.docroot / "d", race_site.secrets)
    _hammer(race_site, (("GET", "/d/page.txt"), ("GET", "/d/")), flip)


def test_error_document_flipping_to_a_symlink_never_serves_the_secret(race_site):
    flip = _flip_file(race_site.docroot / "errors" / "e-404.html",
                      race_site.secrets / "page.txt")
    _hammer(race_site, (("GET", "/missing.txt"),), flip)


def test_still_refused_and_served_without_a_race(race_site):
    """The plain cases keep lighttpd's answers: a symlinked file or directory is 403,
    a symlinked error document or readme is not used, real files are served."""
    docroot, secrets = race_site.docroot, race_site.secrets
    assert race_site.get("/page.txt")[2] == PUBLIC
    assert race_site.get("/d/page.txt")[2] == PUBLIC
    (docroot / "filelink.txt").symlink_to(secrets / "page.txt")
    (docroot / "dirlink").symlink_to(secrets)
    assert race_site.get("/filelink.txt")[0] == 403
    assert race_site.get("/dirlink/page.txt")[0] == 403
    assert race_site.get("/dirlink/")[0] == 403
    (docroot / "d" / "README.txt").symlink_to(secrets / "page.txt")
    status, _, body = race_site.get("/d/")
    assert status == 200 and b"page.txt" in body and MARK not in body
    (docroot / "errors" / "e-404.html").unlink()
    (docroot / "errors" / "e-404.html").symlink_to(secrets / "page.txt")
    status, _, body = race_site.get("/missing.txt")
    assert status == 404 and b"TOP-SECRET" not in body


def test_a_kept_answer_is_not_replayed_once_the_path_is_a_symlink(race_site):
    """A small file answered twice is the kind of answer kept for replay; once its path
    is a symlink, the next identical request is refused, within the same second too
    (each round takes milliseconds: most fall within one second of the tick)."""
    page = race_site.docroot / "page.txt"
    connection = race_site.connection()
    served = 0
    try:
        for _ in range(5):
            page.unlink()
            page.write_bytes(PUBLIC)
            for _ in range(2):      # a 403 when the tick fell just after the last flip
                connection.request("GET", "/page.txt")
                served += connection.getresponse().read() == PUBLIC
            page.unlink()
            page.symlink_to(race_site.secrets / "page.txt")
            connection.request("GET", "/page.txt")
            response = connection.getresponse()
            assert (response.status, response.read()) != (200, PUBLIC)
    finally:
        connection.close()
    assert served >= 4
