"""mod_maxminddb: GeoIP2 variables for the backends, beside lighttpd 1.4.69.

Small MaxMind DB files are written by the tests (mmdb-writer) with IPv4 and IPv6
networks and nested records.  A /bin/sh CGI script prints the GEOIP_* environment;
mod_extforward trusts 127.0.0.1, so X-Forwarded-For picks the client address looked
up.  Debian's lighttpd with lighttpd-mod-maxminddb serves the same config and must
give the same bodies.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

mmdb_writer = pytest.importorskip("mmdb_writer")
pytest.importorskip("maxminddb")

from netaddr import IPSet  # noqa: E402  (installed with mmdb-writer)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: serverproc, procutil

from master.configload import load  # noqa: E402
from server_util import WorkerProcess, config_text, read_until_closed  # noqa: E402
from procutil import run_cli  # noqa: E402
from serverproc import get, serving, wait_until  # noqa: E402
from shared.config.errors import ConfigError  # noqa: E402
from test_differential import LIGHTTPD, Lighttpd, beside_lighttpd, exchange  # noqa: E402
from worker.modules.mod_maxminddb import (  # noqa: E402
    env_paths, env_text, logs_env, value_at)

MODULE_SO = Path("/usr/lib/lighttpd/mod_maxminddb.so")

CITY = {
    "country": {"iso_code": "NL", "names": {"en": "Netherlands", "de": "Niederlande"}},
    "city": {"names": {"en": "Amsterdam"}},
    "location": {"latitude": 52.3676, "longitude": 4.9041,
                 "accuracy_radius": mmdb_writer.MmdbU16(20)},
    "subdivisions": [{"iso_code": "NH"}, {"iso_code": "XX"}],
    "flags": {"anycast": True, "proxy": False},
    "signed": mmdb_writer.MmdbI32(-7),
}
V6 = {"country": {"iso_code": "DE", "names": {"en": "Germany"}},
      "location": {"latitude": mmdb_writer.MmdbF32(48.5)}}
RAW = {"city": {"names": {"en": "München"}}, "signed": b"\xff\x00raw"}
SMALL = {"country": {"iso_code": "FR"}}

ENV = """maxminddb.env = (
    "GEOIP_COUNTRY_CODE"   => "country/iso_code",
    "GEOIP_COUNTRY_NAME"   => "country/names/en",
    "GEOIP_CITY_NAME"      => "city/names/en",
    "GEOIP_CITY_LATITUDE"  => "location/latitude",
    "GEOIP_CITY_LONGITUDE" => "location/longitude",
    "GEOIP_RADIUS"         => "location/accuracy_radius",
    "GEOIP_SUBDIVISION"    => "subdivisions/1/iso_code",
    "GEOIP_ANYCAST"        => "flags/anycast",
    "GEOIP_PROXY"          => "flags/proxy",
    "GEOIP_SIGNED"         => "signed",
    "GEOIP_MAP"            => "country/names",
    "GEOIP_NOWHERE"        => "country/names/xx",
)"""

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_extforward", "mod_maxminddb", "mod_rewrite", "mod_cgi",
                  "mod_ssi", "mod_staticfile", "mod_accesslog")
ssi.extension = (".shtml")
url.rewrite-once = ("^/to-off/(.*)" => "/off/$1", "^/to-small/(.*)" => "/small/$1")
url.rewrite-if-not-file = ("^/missing/(.*)" => "/off/$1")
server.tag = "difftest"
cgi.assign = (".sh" => "")
mimetype.assign = (".txt" => "text/plain", "" => "application/octet-stream")
extforward.forwarder = ("127.0.0.1" => "trust")
accesslog.filename = "{log}"
accesslog.format = "%h %U %{{GEOIP_COUNTRY_CODE}}e %{{GEOIP_CITY_NAME}}e"
maxminddb.activate = "enable"
maxminddb.db = "{db}"
{env}
$HTTP["url"] =^ "/off/" {{ maxminddb.activate = "disable" }}
$HTTP["url"] =^ "/small/" {{ maxminddb.db = "{small}" }}
$HTTP["url"] =^ "/noenv/" {{ maxminddb.env = () maxminddb.db = "" }}
"""

SCRIPT = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "REMOTE_ADDR=$REMOTE_ADDR"
env | grep '^GEOIP_' | sort
"""

SSI_PAGE = '<!--#echo var="GEOIP_COUNTRY_CODE" --> <!--#echo var="GEOIP_CITY_NAME" -->\n'


def write_db(path: Path, networks: dict[str, dict]) -> Path:
    writer = mmdb_writer.MMDBWriter(ip_version=6, ipv4_compatible=True,
                                    database_type="GeoIP2-City")
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def make_site(base: Path) -> tuple[Path, Path]:
    docroot = base / "www"
    for sub in ("", "off", "small", "noenv"):
        (docroot / sub).mkdir(parents=True, exist_ok=True)
        script = docroot / sub / "env.sh"
        script.write_text(SCRIPT)
        script.chmod(0o755)
    (docroot / "file.txt").write_text("static\n")
    (docroot / "page.shtml").write_text(SSI_PAGE)
    db = write_db(base / "city.mmdb", {"203.0.113.0/24": CITY, "2001:db8::/32": V6,
                                       "198.51.100.0/25": SMALL, "192.0.2.128/25": RAW})
    small = write_db(base / "small.mmdb", {"203.0.113.0/24": SMALL})
    conf = base / "geo.conf"
    conf.write_text(CONFIG.format(docroot=docroot, db=db, small=small, env=ENV,
                                  log=base / "access.log"))
    return conf, base / "access.log"


def request(path: str, client: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: geo.example", "Connection: close"]
    if client is not None:
        lines.append(f"X-Forwarded-For: {client}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def body(raw: bytes) -> str:
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head
    return rest.decode("utf-8", "surrogateescape")


REQUESTS = [
    ("/env.sh", "203.0.113.9"), ("/env.sh", "2001:db8:1::5"), ("/env.sh", "192.0.2.1"),
    ("/env.sh", "192.0.2.200"), ("/page.shtml", "203.0.113.9"), ("/page.shtml", "192.0.2.1"),
    ("/env.sh", None), ("/env.sh", "198.51.100.7"), ("/env.sh", "198.51.100.200"),
    ("/env.sh", "::ffff:203.0.113.9"), ("/off/env.sh", "203.0.113.9"),
    ("/small/env.sh", "203.0.113.9"), ("/small/env.sh", "2001:db8::1"),
    ("/noenv/env.sh", "203.0.113.9"), ("/to-off/env.sh", "203.0.113.9"),
    ("/to-small/env.sh", "203.0.113.9"), ("/missing/env.sh", "203.0.113.9"),
]

EXPECTED_CITY = """REMOTE_ADDR=203.0.113.9
GEOIP_ANYCAST=1
GEOIP_CITY_LATITUDE=52.36760
GEOIP_CITY_LONGITUDE=4.90410
GEOIP_CITY_NAME=Amsterdam
GEOIP_COUNTRY_CODE=NL
GEOIP_COUNTRY_NAME=Netherlands
GEOIP_PROXY=0
GEOIP_RADIUS=20
GEOIP_SIGNED=-7
GEOIP_SUBDIVISION=XX
"""


def logged(log: Path, path: str, count: int, timeout: float = 5.0) -> list[str]:
    """The access log's lines for `path`, once `count` are written (buffered: about
    once a second)."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        lines = [line for line in text.splitlines() if f" {path} " in line]
        if len(lines) >= count:
            break
        time.sleep(0.05)
    return lines


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return make_site(tmp_path_factory.mktemp("geo"))


@pytest.fixture(scope="module")
def worker(site):
    conf, _ = site
    with WorkerProcess(conf) as process:
        yield process


def test_backends_see_the_client_geoip_record(worker):
    seen = {client: body(exchange(worker.port, request("/env.sh", client)))
            for client in ("203.0.113.9", "2001:db8:1::5", "192.0.2.1", None)}
    assert seen["203.0.113.9"] == EXPECTED_CITY
    assert seen["2001:db8:1::5"] == ("REMOTE_ADDR=2001:db8:1::5\nGEOIP_CITY_LATITUDE="
                                     "48.50000\nGEOIP_COUNTRY_CODE=DE\n"
                                     "GEOIP_COUNTRY_NAME=Germany\n")
    assert seen["192.0.2.1"] == "REMOTE_ADDR=192.0.2.1\n"          # in no network
    raw = body(exchange(worker.port, request("/env.sh", "192.0.2.200")))
    assert raw == "REMOTE_ADDR=192.0.2.200\nGEOIP_CITY_NAME=München\nGEOIP_SIGNED=\udcff\n"
    assert seen[None] == "REMOTE_ADDR=127.0.0.1\n"
    ssi = body(exchange(worker.port, request("/page.shtml", "203.0.113.9")))
    assert ssi == "NL Amsterdam\n"


def test_settings_per_condition(worker):
    off = body(exchange(worker.port, request("/off/env.sh", "203.0.113.9")))
    assert off == "REMOTE_ADDR=203.0.113.9\n"
    small = body(exchange(worker.port, request("/small/env.sh", "203.0.113.9")))
    assert small == "REMOTE_ADDR=203.0.113.9\nGEOIP_COUNTRY_CODE=FR\n"
    rewritten = body(exchange(worker.port, request("/to-off/env.sh", "203.0.113.9")))
    assert rewritten == off                 # the settings of the URL rewritten to
    late = body(exchange(worker.port, request("/missing/env.sh", "203.0.113.9")))
    assert late == off                      # rewritten once the file was looked for
    noenv = body(exchange(worker.port, request("/noenv/env.sh", "203.0.113.9")))
    assert noenv == EXPECTED_CITY           # an empty env keeps the enclosing one


def test_access_log_shows_the_forwarded_client_country(worker, site):
    _, log = site
    for client in ("203.0.113.9", "203.0.113.9", "2001:db8::2", "203.0.113.9"):
        assert body(exchange(worker.port, request("/file.txt", client))) == "static\n"
    assert logged(log, "/file.txt", 4) == ["203.0.113.9 /file.txt NL Amsterdam"] * 2 + \
        ["2001:db8::2 /file.txt DE -", "203.0.113.9 /file.txt NL Amsterdam"]


def fetch_from(source: str, port: int, path: str) -> bytes:
    """One request on a connection made from a loopback address of our choosing."""
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source, 0)) as sock:
        sock.sendall(request(path))
        return read_until_closed(sock)


def test_kept_static_answers_are_not_replayed_for_other_clients(tmp_path):
    """A static answer kept for one client and replayed for another would carry the
    first one's environment into the access log."""
    db = write_db(tmp_path / "local.mmdb", {"127.0.0.1/32": SMALL, "127.0.0.2/32": V6})
    log = tmp_path / "access.log"
    (tmp_path / "file.txt").write_text("static\n")
    conf = tmp_path / "direct.conf"
    conf.write_text(config_text(tmp_path, modules=("mod_maxminddb", "mod_staticfile",
                                                   "mod_accesslog"), extra=f"""
accesslog.filename = "{log}"
accesslog.format = "%h %U %{{GEOIP_COUNTRY_CODE}}e"
maxminddb.activate = "enable"
maxminddb.db = "{db}"
maxminddb.env = ("GEOIP_COUNTRY_CODE" => "country/iso_code")
"""))
    sources = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]
    with WorkerProcess(conf) as process:
        for source in sources:
            assert body(fetch_from(source, process.port, "/file.txt")) == "static\n"
        expected = [f"{source} /file.txt {'FR' if source == '127.0.0.1' else 'DE'}"
                    for source in sources]
        assert logged(log, "/file.txt", len(sources)) == expected


@pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK) or not MODULE_SO.exists(),
                    reason="Debian's lighttpd with lighttpd-mod-maxminddb is not installed")
def test_same_environment_as_lighttpd(tmp_path):
    conf, _ = make_site(tmp_path)
    with beside_lighttpd(conf) as (theirs, ours):
        for path, client in REQUESTS:
            raw = request(path, client)
            assert body(exchange(ours, raw)) == body(exchange(theirs, raw)), (path, client)


@pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK) or not MODULE_SO.exists(),
                    reason="Debian's lighttpd with lighttpd-mod-maxminddb is not installed")
def test_known_difference_lighttpd_logs_the_variables_only_after_a_backend(tmp_path):
    """lighttpd sets the variables when a backend asks for its environment, so its
    access log shows "-" for a static file; pylighttpd sets them for every request
    (test_access_log_shows_the_forwarded_client_country)."""
    conf, log = make_site(tmp_path)
    lighttpd = Lighttpd(conf)
    try:
        for path in ("/file.txt", "/env.sh"):
            exchange(lighttpd.port, request(path, "203.0.113.9"))
    finally:
        lighttpd.stop()
    assert log.read_text().splitlines() == ["203.0.113.9 /file.txt - -",
                                            "203.0.113.9 /env.sh NL Amsterdam"]


@pytest.mark.parametrize("problem", ["missing", "corrupt", "suffix"])
def test_unusable_database_refuses_the_config(tmp_path, problem):
    db = tmp_path / ("geo.dat" if problem == "suffix" else "geo.mmdb")
    if problem != "missing":
        db.write_bytes(b"not a maxmind database\n" * 10)
    conf = tmp_path / "bad.conf"
    conf.write_text(config_text(tmp_path, modules=("mod_maxminddb",),
                                extra=f'maxminddb.db = "{db}"\n'))
    with pytest.raises(ConfigError) as caught:
        load(str(conf))
    assert str(caught.value).startswith(f"{conf}:5:")
    assert ("unsupported type" if problem == "suffix" else "failed to open GeoIP2") \
        in str(caught.value)
    if os.access(LIGHTTPD, os.X_OK) and MODULE_SO.exists():
        checked = subprocess.run([LIGHTTPD, "-tt", "-f", str(conf)], capture_output=True,
                                 timeout=20)
        assert checked.returncode != 0


@pytest.mark.parametrize("path", ["", "/country", "country/", " "])
def test_env_paths_are_checked(tmp_path, path):
    conf = tmp_path / "env.conf"
    conf.write_text(config_text(tmp_path, modules=("mod_maxminddb",),
                                extra=f'maxminddb.env = ("X" => "{path}")\n'))
    with pytest.raises(ConfigError, match="must not begin or end with '/'"):
        load(str(conf))


def test_values_as_lighttpd_writes_them():
    assert env_paths((("A", "x/0/y"),)) == (("A", ("x", "0", "y")),)
    assert [env_text(v) for v in (True, False, "é", b"\xffb", 1.5, -3, 2**64 + 1)] == \
        ["1", "0", "é", "\udcffb", "1.50000", "-3", "0x00000000000000010000000000000001"]
    assert env_text("a\0b") == "a" and env_text(b"a\0b") == "a"
    assert env_text({"a": 1}) is None and env_text([1]) is None and env_text(None) is None
    assert value_at({"a": [{"b": 2}]}, ("a", "-1", "b")) == 2
    assert value_at({"a": [1]}, ("a", "5")) is None
    assert value_at({"a": "s"}, ("a", "b")) is None


def test_replays_stay_on_unless_the_access_log_writes_the_variables():
    class Format:
        text = "%h %{GEOIP_COUNTRY_CODE}e %{User-Agent}i"

    env = env_paths((("GEOIP_COUNTRY_CODE", "country/iso_code"),))
    assert logs_env({"accesslog.format": Format, "maxminddb.env": env})
    assert not logs_env({"accesslog.format": Format,
                         "maxminddb.env": env_paths((("GEOIP_CITY", "city"),))})
    assert not logs_env({"maxminddb.env": env})          # no mod_accesslog


def served_country(port: int) -> bytes:
    return get(port, "/env.sh")[2]


def test_reload_reopens_the_database_and_refuses_a_broken_one(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "env.sh").write_text(SCRIPT)
    (docroot / "env.sh").chmod(0o755)
    db = write_db(tmp_path / "geo.mmdb", {"127.0.0.0/8": SMALL})
    extra = f"""server.modules = ("mod_maxminddb", "mod_cgi", "mod_indexfile", "mod_staticfile")
cgi.assign = (".sh" => "")
maxminddb.activate = "enable"
maxminddb.db = "{db}"
maxminddb.env = ("GEOIP_COUNTRY_CODE" => "country/iso_code")"""
    with serving(tmp_path, extra) as server:
        assert served_country(server.port).endswith(b"GEOIP_COUNTRY_CODE=FR\n")
        fresh = write_db(tmp_path / "fresh.mmdb", {"127.0.0.0/8": V6})
        os.replace(fresh, db)
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: served_country(server.port).endswith(b"GEOIP_COUNTRY_CODE=DE\n"))
        broken = tmp_path / "broken.mmdb"
        broken.write_bytes(b"garbage" * 100)
        server.write_config(extra.replace(str(db), str(broken)))
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in server.errorlog.read_text())
        assert f"failed to open GeoIP2 database ({broken})" in server.errorlog.read_text()
        assert served_country(server.port).endswith(b"GEOIP_COUNTRY_CODE=DE\n")


def test_start_up_with_a_missing_database_fails_with_its_place(tmp_path):
    conf = tmp_path / "missing.conf"
    conf.write_text(config_text(tmp_path, modules=("mod_maxminddb",),
                                extra=f'maxminddb.db = "{tmp_path}/none.mmdb"\n'))
    result = run_cli("-D", "-f", str(conf), timeout=20)
    assert result.returncode == 1
    assert f"{conf}:5:1: failed to open GeoIP2 database ({tmp_path}/none.mmdb): " \
           "No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_fastcgi_and_scgi_backends_see_the_variables(tmp_path):
    pytest.importorskip("flup", reason="flup (FastCGI and SCGI for WSGI) is not installed")
    from gw_backends import flup
    sockets = Path(tempfile.mkdtemp(prefix="geo-", dir="/tmp"))     # short socket paths
    db = write_db(tmp_path / "local.mmdb", {"127.0.0.0/8": SMALL})
    conf = tmp_path / "gw.conf"
    conf.write_text(config_text(tmp_path, modules=("mod_maxminddb", "mod_fastcgi",
                                                   "mod_scgi"), extra=f"""
fastcgi.server = ("/f/" => (("socket" => "{sockets}/f.sock", "check-local" => "disable")))
scgi.server = ("/s/" => (("socket" => "{sockets}/s.sock", "check-local" => "disable")))
maxminddb.activate = "enable"
maxminddb.db = "{db}"
maxminddb.env = ("USER" => "country/iso_code")
"""))       # USER: one of the variables gw_app.py echoes
    backends = []
    try:
        backends += [flup("fcgi", f"{sockets}/f.sock"), flup("scgi", f"{sockets}/s.sock")]
        with WorkerProcess(conf) as process:
            for prefix in ("/f/", "/s/"):
                status, _, answer = process.get(prefix + "app")
                assert status == 200
                assert "USER=FR" in answer.decode().splitlines(), prefix
    finally:
        for backend in backends:
            backend.stop()
        shutil.rmtree(sockets, ignore_errors=True)


def test_a_record_damaged_in_the_database_sets_nothing_and_is_logged_once(tmp_path):
    db = write_db(tmp_path / "damaged.mmdb", {"127.0.0.0/8": SMALL})
    data = bytearray(db.read_bytes())
    start = data.index(bytes(16)) + 16          # the data section follows the tree
    data[start:start + 2] = b"\xff\xff"
    db.write_bytes(data)
    (tmp_path / "env.sh").write_text(SCRIPT)
    (tmp_path / "env.sh").chmod(0o755)
    errors = tmp_path / "error.log"
    conf = tmp_path / "damaged.conf"
    conf.write_text(config_text(tmp_path, modules=("mod_maxminddb", "mod_cgi"), extra=f"""
server.errorlog = "{errors}"
cgi.assign = (".sh" => "")
maxminddb.activate = "enable"
maxminddb.db = "{db}"
maxminddb.env = ("GEOIP_COUNTRY_CODE" => "country/iso_code")
"""))
    with WorkerProcess(conf) as process:
        for _ in range(2):
            assert body(exchange(process.port, request("/env.sh"))) == "REMOTE_ADDR=127.0.0.1\n"
    logged_errors = [line for line in errors.read_text().splitlines()
                     if f"GeoIP2 lookup of 127.0.0.1 in {db} failed" in line]
    assert len(logged_errors) == 1
