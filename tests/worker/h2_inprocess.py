"""A server in this process for HTTP/2 tests that drive its loop themselves: a docroot
with small.txt, the static file module, no worker process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server_util import config_text


def static_server(tmp_path: Path, extra: str = "") -> Any:
    """A worker.server.Server on `tmp_path`/www (`extra`: more config lines); close it
    with close_all()."""
    from master.configload import load
    from worker.server import Server

    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "small.txt").write_text("small\n")
    config = tmp_path / "h2.conf"
    config.write_text(config_text(docroot, extra, modules=("mod_staticfile",)))
    return Server(load(str(config)), [])
