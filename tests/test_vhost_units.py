"""The parts of the virtual-host modules that need no server: mod_evhost's patterns
(lighttpd 1.4.69's own test vectors, and the same patterns refused as `lighttpd -tt`
refuses them) and mod_userdir's memory of password database lookups.
"""

from __future__ import annotations

import pwd

import pytest

from procutil import run_lighttpd
from shared.config.directives import DirectiveValueError
from worker.modules import mod_userdir
from worker.modules.mod_evhost import build_path, host_parts, parse_pattern

# (host, pattern, path): lighttpd's tests/test_mod_evhost.c, and more
BUILT = [
    ("host.example.org", "/web/%3/", "/web/host/"),
    ("host.example.org", "/web/%{3.1}/%{3.2}/%3/", "/web/h/o/host/"),
    ("host.example.org", "/web/%{3.0}/", "/web/host/"),
    ("host.example.org", "/web/%3.\x01/", "/web/host.\x01/"),
    ("host.example.org", "/web/%0/", "/web/example.org/"),
    ("example", "/web/%0", "/web/example/"),
    ("[::1]:80", "/web/%0", "/web/[::1]/"),
    ("a.b.example.org:8080", "/w/%_/%4/%9/%%/%{4.9}x", "/w/a.b.example.org/a//%/x/"),
    ("127.0.0.1", "/w/%0/%1/%4", "/w/0.1/1/127/"),
]
BAD_PATTERNS = ["/web/%x/", "/web/%{x}/", "/web/%{1.x}/", "/web/%{1.2/", "/web/%{12}/",
                "/web/%"]


@pytest.mark.parametrize("host,pattern,path", BUILT)
def test_paths_built_as_lighttpd_builds_them(host, pattern, path):
    assert build_path(parse_pattern(pattern), host) == path


def test_the_parts_of_a_host():
    assert host_parts("sub2.sub1.domain.tld:81") == {
        "0": "domain.tld", "1": "tld", "2": "domain", "3": "sub1", "4": "sub2"}


def test_an_empty_pattern_turns_the_module_off():
    assert parse_pattern("") is None


@pytest.mark.parametrize("pattern", BAD_PATTERNS)
def test_a_bad_pattern_is_refused(pattern, tmp_path):
    with pytest.raises(DirectiveValueError, match="invalid evhost.path-pattern"):
        parse_pattern(pattern)
    conf = tmp_path / "evhost.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.modules = ("mod_evhost")\n'
                    f'evhost.path-pattern = "{pattern}"\n')
    assert run_lighttpd("-tt", "-f", str(conf)).returncode != 0


def test_password_lookups_are_remembered_for_a_minute(monkeypatch):
    asked = []

    def getpwnam(name):
        asked.append(name)
        if name != "alice":
            raise KeyError(name)
        return pwd.struct_passwd(("alice", "x", 1000, 1000, "", "/home/alice", "/bin/sh"))

    monkeypatch.setattr(mod_userdir.pwd, "getpwnam", getpwnam)
    homes = mod_userdir.HomeDirectories()
    found = [homes.home(name, now) for name, now in
             [("alice", 0.0), ("alice", 59.0), ("ghost", 1.0), ("ghost", 2.0), ("alice", 61.0)]]
    assert found == ["/home/alice", "/home/alice", "", "", "/home/alice"]
    assert asked == ["alice", "ghost", "alice"]


def test_a_flood_of_names_is_forgotten_not_kept(monkeypatch):
    monkeypatch.setattr(mod_userdir.pwd, "getpwnam", lambda name: (_ for _ in ()).throw(
        KeyError(name)))
    homes = mod_userdir.HomeDirectories()
    for number in range(3 * mod_userdir.MAX_LOOKUPS):
        homes.home(f"user{number}", 0.0)
    assert len(homes.known) <= mod_userdir.MAX_LOOKUPS
