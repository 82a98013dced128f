"""worker/backend.py: one backend per address of a host (a spawned host's processes),
balancing over all of them, max-load-per-proc, and disable-time for an address that
refused."""

from __future__ import annotations

import errno
import socket

from shared.gateway_hosts import Extension, HostSpec, Proc
from worker.backend import Backends
from worker.loop import EventLoop


class _Services:
    def __init__(self) -> None:
        self.loop = EventLoop()      # only its clock is read: 100.0 here
        self.loop.now = 100.0
        self.logged: list[str] = []

    def log_error(self, _source: str, message: str) -> None:
        self.logged.append(message)


def _host(path: str, procs: int, max_load: int = 1, label: str = "") -> HostSpec:
    addresses = tuple(Proc(n, socket.AF_UNIX, f"{path}-{n}", f"unix:{path}-{n}")
                      for n in range(procs))
    return HostSpec(label, f"unix:{path}", socket.AF_UNIX, path, path, 0,
                    bin_path="/bin/true", max_procs=procs, max_load_per_proc=max_load,
                    disable_time=5, procs=addresses)


def _backends() -> tuple[Backends, _Services]:
    services = _Services()
    return Backends(services), services   # type: ignore[arg-type]


def test_fair_balancing_spreads_over_every_process_of_every_host() -> None:
    backends, _ = _backends()
    extension = Extension(".php", (_host("/a", 2), _host("/b", 2)))
    names = []
    for _ in range(4):
        chosen = backends.choose(extension, "fair", "/x.php", "h", "127.0.0.1")
        assert chosen is not None
        chosen.load += 1
        names.append(chosen.name)
    assert names == ["unix:/a-0", "unix:/a-1", "unix:/b-0", "unix:/b-1"]


def test_max_load_per_proc_prefers_a_process_with_room() -> None:
    backends, _ = _backends()
    extension = Extension(".php", (_host("/a", 2, max_load=3),))
    first, second = backends.extension_backends(extension)
    first.load, second.load = 1, 2       # both have room: the least loaded
    assert backends.choose(extension, "fair", "/", "", "") is first
    extension_rr = Extension(".rr", (_host("/r", 3, max_load=1),))
    procs = backends.extension_backends(extension_rr)
    procs[1].load = 1                    # full: round-robin passes it over
    picks = [backends.choose(extension_rr, "round-robin", "/", "", "") for _ in range(3)]
    assert picks == [procs[0], procs[2], procs[0]]


def test_all_full_still_takes_the_least_loaded() -> None:
    backends, _ = _backends()
    extension = Extension(".php", (_host("/a", 2, max_load=1),))
    first, second = backends.extension_backends(extension)
    first.load, second.load = 3, 2
    assert backends.choose(extension, "fair", "/", "", "") is second


def test_a_process_that_refused_sits_out_its_disable_time() -> None:
    backends, services = _backends()
    extension = Extension(".php", (_host("/a", 2),))
    first, second = backends.extension_backends(extension)
    backends.disable(first, OSError(errno.ECONNREFUSED, "Connection refused"))
    assert backends.choose(extension, "fair", "/", "", "") is second
    backends.disable(second, OSError(errno.ECONNREFUSED, "Connection refused"))
    assert backends.choose(extension, "fair", "/x", "", "") is None
    assert any("all handlers for /x on .php are down" in line for line in services.logged)
    services.loop.now += 6
    assert backends.choose(extension, "fair", "/", "", "") is first


def test_hash_keeps_a_host_and_uses_its_processes() -> None:
    backends, _ = _backends()
    extension = Extension("/app/", (_host("/a", 2, label="a"), _host("/b", 2, label="b")))
    first = backends.choose(extension, "hash", "/app/x", "example", "")
    assert first is not None
    first.load += 1
    again = backends.choose(extension, "hash", "/app/x", "example", "")
    assert again is not None and again.spec is first.spec and again is not first
