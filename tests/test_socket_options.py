"""The listening sockets' options, each from the block of its own $SERVER["socket"]
(else the global value), as lighttpd 1.4.69 reads them (src/network.c):
server.defer-accept (TCP_DEFER_ACCEPT, never on a TLS socket), server.v4mapped over
server.set-v6only; and server.core-files, the core size limit the workers run under."""

from __future__ import annotations

import resource
import socket
from pathlib import Path

from master.configload import load
from master.listeners import configured_addresses, open_socket
from procutil import run_cli, run_lighttpd
from serverproc import Server, free_port, wait_until
from test_tls import make_certificate


def _addresses(tmp_path: Path, text: str) -> dict[str, object]:
    conf = tmp_path / "x.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n{text}\n')
    return {address.spec: address for address in configured_addresses(load(str(conf)).compiled)}


def test_each_socket_takes_the_options_of_its_own_block(tmp_path):
    plain, tls, six = free_port(), free_port(), free_port()
    crt, key = make_certificate(tmp_path, "localhost")
    addresses = _addresses(tmp_path, f"""
server.bind = "127.0.0.1"
server.port = {plain}
server.defer-accept = "enable"
server.modules = ("mod_openssl")
$SERVER["socket"] == "127.0.0.1:{tls}" {{
  ssl.engine = "enable" ssl.pemfile = "{crt}" ssl.privkey = "{key}" }}
$SERVER["socket"] == "[::1]:{six}" {{ server.v4mapped = "enable" }}
""")
    assert addresses[f"127.0.0.1:{plain}"].defer_accept
    assert not addresses[f"127.0.0.1:{tls}"].defer_accept    # a TLS socket never defers
    assert addresses[f"[::1]:{six}"].v6only is False        # v4mapped decides over v6only
    assert addresses[f"[::1]:{six}"].defer_accept             # the global value


def test_without_v4mapped_set_v6only_decides(tmp_path):
    six = free_port()
    addresses = _addresses(tmp_path, f'$SERVER["socket"] == "[::1]:{six}" {{ '
                                     'server.set-v6only = "disable" }')
    assert addresses[f"[::1]:{six}"].v6only is False
    addresses = _addresses(tmp_path, f'$SERVER["socket"] == "[::1]:{six}" {{ '
                                     'server.v4mapped = "disable" server.set-v6only = "disable" }')
    assert addresses[f"[::1]:{six}"].v6only is True


def test_the_options_reach_the_sockets(tmp_path):
    six, four = free_port(), free_port()
    addresses = _addresses(tmp_path, f"""
server.bind = "127.0.0.1"
server.port = {four}
server.defer-accept = "enable"
$SERVER["socket"] == "[::1]:{six}" {{ server.v4mapped = "enable" server.defer-accept = "disable" }}
""")
    listening = [open_socket(address, 16, reuse_port=True) for address in addresses.values()]
    try:
        options = {sock.getsockname()[1]: sock for sock in listening}
        assert options[four].getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
        assert options[six].getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 0
        # (IPV6_V6ONLY is not looked at: Linux turns it on for any socket bound to one
        # IPv6 address such as ::1, and the tests bind to no wildcard address)
    finally:
        for sock in listening:
            sock.close()


def _core_limits(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return tuple(line.split()[4:6])      # type: ignore[return-value]
    raise AssertionError("no core limit line")


def _no_cores() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def test_core_files_raise_the_workers_core_limit(tmp_path):
    for enabled in (True, False):
        base = tmp_path / str(enabled)
        base.mkdir()
        server = Server(base, f'server.core-files = "{"enable" if enabled else "disable"}"',
                        preexec_fn=_no_cores)
        try:
            server.wait_serving()
            workers = wait_until(server.children)
            soft, hard = _core_limits(workers[0])
            assert (soft == hard) is enabled and (soft == "0") is not enabled
        finally:
            server.stop()


def test_a_freebsd_accept_filter_is_a_warning_on_linux(tmp_path):
    """lighttpd on Linux takes server.bsd-accept-filter and does nothing with it; so
    does pylighttpd, saying so rather than calling the key unknown."""
    conf = tmp_path / "filter.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.port = {free_port()}\n'
                    'server.bsd-accept-filter = "httpready"\n')
    checked = run_cli("-tt", "-f", str(conf))
    assert checked.returncode == 0
    assert checked.stderr == (f'{conf}:3:1: WARNING: server.bsd-accept-filter "httpready": '
                              "FreeBSD accept filters do not exist on Linux; ignored, as "
                              "lighttpd ignores it here (server.defer-accept is the Linux "
                              "way)\n")
    theirs = run_lighttpd("-tt", "-f", str(conf))
    assert (theirs.returncode, theirs.stderr) == (0, "")
