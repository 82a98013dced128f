"""The host arrays of the gateway modules: every lighttpd per-host key, its checks, and
the addresses of spawned processes."""

import signal
import socket

import pytest

from shared.config.directives import DirectiveValueError
from shared.config.values import Array
from shared.gateway_hosts import parse_responder_servers, parse_servers, spawned_hosts


def servers(ext: str, *hosts: dict) -> Array:
    def value(item):
        if isinstance(item, dict):
            return Array([(k, value(v)) for k, v in item.items()])
        if isinstance(item, list):
            return Array([(None, value(v)) for v in item])
        return item
    return Array([(ext, Array([(None, value(host)) for host in hosts]))])


def test_php_snippet_keys_parse_with_lighttpd_defaults():
    (extension,) = parse_servers(servers(".php", {
        "bin-path": "/usr/bin/php-cgi", "socket": "/run/pl/php.socket", "max-procs": 2,
        "bin-environment": {"PHP_FCGI_CHILDREN": "4"},
        "bin-copy-environment": ["PATH", "SHELL"], "broken-scriptfilename": "enable"}))
    (spec,) = extension.hosts
    assert spec.spawned and spec.broken_scriptfilename
    assert spec.bin_environment == (("PHP_FCGI_CHILDREN", "4"),)
    assert spec.bin_copy_environment == ("PATH", "SHELL")
    assert spec.kill_signal == signal.SIGTERM and spec.mode == "responder"
    assert spec.check_local and spec.listen_backlog == 1024
    assert [p.address for p in spec.procs] == ["/run/pl/php.socket-0", "/run/pl/php.socket-1"]
    assert spawned_hosts((extension,)) == [spec]


def test_tcp_spawned_processes_take_consecutive_ports():
    (extension,) = parse_servers(servers("/app/", {
        "bin-path": "/srv/app", "host": "127.0.0.1", "port": 9000, "max-procs": 3}))
    (spec,) = extension.hosts
    assert [p.address for p in spec.procs] == [("127.0.0.1", 9000), ("127.0.0.1", 9001),
                                               ("127.0.0.1", 9002)]
    assert spec.procs[0].family == socket.AF_INET


def test_a_host_that_is_not_spawned_is_its_own_single_address():
    (extension,) = parse_servers(servers(".fcgi", {"socket": "/run/app.sock"}))
    (spec,) = extension.hosts
    assert [p.address for p in spec.procs] == ["/run/app.sock"]
    assert spawned_hosts((extension,)) == []


@pytest.mark.parametrize("host, message", [
    ({"socket": "/s", "mode": "filter"}, '"mode" has to be'),
    ({"socket": "/s", "max-procs": 0}, 'unexpected value for "max-procs"'),
    ({"socket": "/s", "bin-environment": ["A=1"]}, 'unexpected value for "bin-environment"'),
    ({"socket": "/s", "bin-copy-environment": {"A": "b"}},      # a list, as lighttpd says
     'unexpected value for "bin-copy-environment"'),
    ({"socket": "/s", "x-sendfile-docroot": {"d": "/srv"}},
     'unexpected value for "x-sendfile-docroot"'),
    ({"socket": "/s", "bin_path": "/x"}, "a dash, not an underscore"),
    ({"host": "127.0.0.1", "port": 65535, "bin-path": "/x", "max-procs": 2}, "beyond 65535"),
    ({"socket": "/" + "s" * 102, "bin-path": "/x"}, "unixsocket is too long"),
])
def test_wrong_host_keys_are_config_errors(host, message):
    with pytest.raises(DirectiveValueError, match=message):
        parse_servers(servers(".php", host))


def test_a_module_that_only_answers_refuses_authorizer_hosts():
    """mod_proxy and mod_wstunnel, as lighttpd: their backends cannot authorize."""
    authorizer = servers("/app/", {"host": "127.0.0.1", "port": 1, "mode": "authorizer"})
    assert parse_servers(authorizer)[0].hosts[0].mode == "authorizer"
    with pytest.raises(DirectiveValueError, match='"mode" = "authorizer"'):
        parse_responder_servers(authorizer)
