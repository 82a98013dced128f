"""What a server's processes load: a config that speaks no TLS and loads no module
that hashes keeps OpenSSL's libcrypto out of the master and the workers (it costs the
master ~3 MB of resident memory once loaded, issue 15's footprint line)."""

from __future__ import annotations

from pathlib import Path

from serverproc import serving


def _mapped_files(pid: int) -> set[str]:
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {Path(line.split()[5]).name for line in lines if len(line.split()) > 5}


def test_a_plain_server_does_not_load_libcrypto(tmp_path):
    with serving(tmp_path, 'server.modules = ("mod_dirlisting", "mod_staticfile")') as server:
        pids = [server.process.pid, *server.children()]
        assert len(pids) == 3
        for pid in pids:
            loaded = _mapped_files(pid)
            assert not any(name.startswith("libcrypto") for name in loaded), pid
            assert "libc.so.6" in loaded       # the maps were read
