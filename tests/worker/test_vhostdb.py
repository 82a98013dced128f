"""mod_vhostdb with each backend against real servers started by the test: sqlite3
(vhostdb.dbi), PostgreSQL (vhostdb.pgsql), MariaDB (vhostdb.mysql) and slapd
(vhostdb.ldap); unknown hosts keep server.document-root, a root that is no directory or
a database down or hanging is a 500 (the others served meanwhile), and vhostdb.cache
keeps roots found."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from held_backend import Blackhole, answers_at, free_port, lighttpd_beside, served_meanwhile
from ldap_server import BASE_DN, Slapd, entries_ldif, needs_slapd
from server_util import WorkerProcess, config_text
from sql_servers import DBNAME, PASSWORD, USER, MariaDB, Postgres, needs_mariadb, needs_postgres

from worker.sql_database import build_query

pytest.importorskip("ldap3", reason="mod_vhostdb_ldap needs the ldap3 package")
pytest.importorskip("psycopg", reason="mod_vhostdb_pgsql needs psycopg")
pytest.importorskip("pymysql", reason="mod_vhostdb_mysql needs PyMySQL")
pytestmark = [needs_slapd, needs_postgres, needs_mariadb]
HOSTS_OU = f"ou=hosts,{BASE_DN}"
SQL = "SELECT docroot FROM vhosts WHERE host='?'"
SITES = ("lite", "lite-port", "cached", "pg", "my", "ldap", "dup1", "dup2")


def _sql_rows(roots: dict[str, Path]) -> list[tuple[str, str]]:
    return [("a.lite", str(roots["lite"])), ("a.lite:8080", str(roots["lite-port"])),
            ("a.cached", str(roots["cached"])), ("b.cached", str(roots["cached"])),
            ("a.pg", str(roots["pg"])), ("a.my", str(roots["my"])),
            ("file.lite", str(roots["lite"] / "index.txt")),
            ("gone.lite", str(roots["lite"] / "no-such-dir")),
            ("dup.pg", str(roots["dup1"])), ("dup.pg", str(roots["dup2"]))]


def _create_sql(rows: list[tuple[str, str]]) -> str:
    values = ", ".join(f"('{host}', '{root}')" for host, root in rows)
    return ("CREATE TABLE vhosts (host VARCHAR(100), docroot VARCHAR(300)); "
            f"INSERT INTO vhosts VALUES {values}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("vhostdb")
    roots = {name: base / name for name in SITES}
    for name, root in roots.items():
        root.mkdir()
        (root / "index.txt").write_text(f"site {name}\n")
    (base / "default").mkdir()
    (base / "default" / "index.txt").write_text("default site\n")
    return base, roots


@pytest.fixture(scope="module")
def servers(site):
    base, roots = site
    rows = _sql_rows(roots)
    with sqlite3.connect(base / "vhosts.db") as connection:
        connection.executescript(_create_sql(rows))
        connection.execute("INSERT INTO vhosts VALUES ('nul.lite', ?)",
                           (f"{roots['lite']}\0/etc",))
    ldif = entries_ldif(
        {"dn": HOSTS_OU, "objectClass": "organizationalUnit", "ou": "hosts"},
        {"dn": f"cn=a.ldap,{HOSTS_OU}", "objectClass": "device", "cn": "a.ldap",
         "description": str(roots["ldap"])})
    slapd = Slapd(base / "slapd", ldif)
    pg, my = Postgres(), MariaDB()
    try:
        pg.run_sql(_create_sql(rows) + f"; ALTER TABLE vhosts OWNER TO {USER}")
        my.run_sql(_create_sql(rows))
        yield slapd, pg, my
    finally:
        slapd.stop()
        pg.stop()
        my.stop()


@pytest.fixture(scope="module")
def site_confs(site, servers):
    """The config with every backend, and the same without those that cannot be
    reached (lighttpd's pgsql connects at start-up and refuses to start without it)."""
    base, _ = site
    slapd, pg, my = servers
    hole = Blackhole()
    extra = f"""server.errorlog = "{base / 'error.log'}"
vhostdb.backend = "dbi"
vhostdb.dbi = ("sql" => "{SQL}", "dbtype" => "sqlite3", "dbname" => "vhosts.db",
               "sqlite3_dbdir" => "{base}")
vhostdb.pgsql = ("sql" => "{SQL}", "dbname" => "{DBNAME}", "host" => "127.0.0.1",
                 "port" => "{pg.port}", "user" => "{USER}", "password" => "{PASSWORD}")
vhostdb.mysql = ("sql" => "{SQL}", "dbname" => "{DBNAME}", "host" => "127.0.0.1",
                 "port" => "{my.port}", "user" => "{USER}", "password" => "{PASSWORD}")
vhostdb.ldap = ("host" => "{slapd.url}", "base-dn" => "{HOSTS_OU}",
                "filter" => "(&(objectClass=device)(cn=?))", "attr" => "description")
$HTTP["host"] =~ "\\.pg$" {{ vhostdb.backend = "pgsql" }}
$HTTP["host"] =~ "\\.my$" {{ vhostdb.backend = "mysql" }}
$HTTP["host"] =~ "\\.ldap$" {{ vhostdb.backend = "ldap" }}
$HTTP["host"] =~ "\\.cached$" {{ vhostdb.cache = ("max-age" => "60") }}
"""
    unreachable = f"""$HTTP["host"] =~ "\\.down$" {{
  vhostdb.backend = "pgsql"
  vhostdb.pgsql = ("sql" => "{SQL}", "dbname" => "x", "host" => "127.0.0.1",
                   "port" => "{free_port()}", "user" => "x")
}}
$HTTP["host"] =~ "\\.slow$" {{
  vhostdb.backend = "ldap"
  vhostdb.ldap = ("host" => "127.0.0.1:{hole.port}", "base-dn" => "{HOSTS_OU}",
                  "filter" => "(cn=?)", "timeout" => "800000")
}}
"""
    modules = ("mod_vhostdb", "mod_vhostdb_dbi", "mod_vhostdb_pgsql", "mod_vhostdb_mysql",
               "mod_vhostdb_ldap", "mod_staticfile")
    confs = [base / "vhostdb.conf", base / "reachable.conf"]
    confs[0].write_text(config_text(base / "default", extra + unreachable, modules))
    confs[1].write_text(config_text(base / "default", extra, modules))
    yield confs
    hole.close()


@pytest.fixture(scope="module")
def worker(site_confs):
    with WorkerProcess(site_confs[0]) as process:
        yield process


def fetch(worker: WorkerProcess, host: str, path: str = "/index.txt") -> tuple[int, bytes]:
    status, _, body = worker.request("GET", path, {"Host": host})
    return status, body


@pytest.mark.parametrize("host, site_name", [
    ("a.lite", "lite"), ("A.LITE", "lite"), ("a.lite:8080", "lite-port"), ("a.pg", "pg"),
    ("a.my", "my"), ("a.ldap", "ldap"), ("a.cached", "cached")])
def test_each_backend_finds_the_root(worker, host, site_name):
    assert fetch(worker, host) == (200, f"site {site_name}\n".encode())


@pytest.mark.parametrize("host", ["unknown.lite", "unknown.pg", "unknown.my", "unknown.ldap",
                                  "dup.pg"])
def test_unknown_hosts_keep_the_default_root(worker, host):
    """dup.pg has two rows: pgsql takes a single row only, as lighttpd."""
    assert fetch(worker, host) == (200, b"default site\n")


@pytest.mark.parametrize("host", ["file.lite", "gone.lite", "nul.lite"])
def test_a_root_that_is_no_directory_is_an_error(worker, host):
    assert fetch(worker, host)[0] == 500


def test_a_root_with_a_nul_byte_is_refused_as_such(worker, site):
    """Not handed to the file system (which would raise on it): said plainly."""
    assert fetch(worker, "nul.lite")[0] == 500
    lines = (site[0] / "error.log").read_text().splitlines()
    assert any("lite\\x00/etc/: Invalid argument" in line for line in lines), lines[-3:]


def test_a_database_down_is_an_error(worker):
    assert fetch(worker, "a.down")[0] == 500
    assert fetch(worker, "a.lite")[0] == 200


def test_a_hanging_directory_holds_no_other_request(worker):
    held, other, first = served_meanwhile(lambda: fetch(worker, "a.slow")[0],
                                          lambda: fetch(worker, "a.lite")[0])
    assert (held, other, first) == (500, 200, True)


DIFFERENTIAL_HOSTS = ("a.lite", "A.LITE", "a.lite:8080", "a.pg", "a.my", "a.cached",
                      "unknown.lite", "unknown.pg", "unknown.my", "dup.pg", "file.lite",
                      "gone.lite", "a.ldap", "unknown.ldap")
# host -> why pylighttpd answers otherwise
KNOWN_DIFFERENCES = {
    "a.ldap": "lighttpd 1.4.69's mod_vhostdb_ldap asks the directory for no attribute "
              "(LDAP_NO_ATTRS) and so never finds a document root; pylighttpd asks for "
              "the configured attr",
}


def test_same_answers_as_lighttpd(site_confs, worker):
    """Runs before the cache test changes the database."""
    exchanges = [("/index.txt", {"Host": host}) for host in DIFFERENTIAL_HOSTS]
    with lighttpd_beside(site_confs[1], "mod_vhostdb", "mod_vhostdb_dbi", "mod_vhostdb_pgsql",
                         "mod_vhostdb_mysql", "mod_vhostdb_ldap") as theirs:
        theirs_answers = answers_at(theirs, exchanges)
    for host, ours, their in zip(DIFFERENTIAL_HOSTS, answers_at(worker.port, exchanges),
                                 theirs_answers):
        if host in KNOWN_DIFFERENCES:
            assert (ours[0], ours[2], their[0], their[2]) == \
                (200, b"site ldap\n", 200, b"default site\n"), host
        else:
            assert ours == their, host


def test_requests_for_one_host_share_its_lookup(worker, site):
    """Three requests for a host on a hanging directory, sent together, wait for one
    lookup: its failure is logged once."""
    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(lambda _: fetch(worker, "c.slow")[0], range(3)))
    assert statuses == [500, 500, 500]
    log = (site[0] / "error.log").read_text()
    assert log.count("(host c.slow)") == 1


def test_cache_keeps_roots_found(worker, site):
    base, roots = site
    assert fetch(worker, "b.cached") == (200, b"site cached\n")
    assert fetch(worker, "a.lite:8080")[0] == 200
    with sqlite3.connect(base / "vhosts.db") as connection:
        connection.execute("UPDATE vhosts SET docroot = ? WHERE host IN (?, ?)",
                           (str(roots["dup1"]), "b.cached", "a.lite:8080"))
    assert fetch(worker, "b.cached") == (200, b"site cached\n")       # kept
    assert fetch(worker, "a.lite:8080") == (200, b"site dup1\n")      # asked again


def test_query_values_are_escaped():
    def doubled(value: str) -> str:
        return value.replace("'", "''")
    assert build_query(SQL, ["x' OR '1'='1"], doubled) == \
        "SELECT docroot FROM vhosts WHERE host='x'' OR ''1''=''1'"
    assert build_query("? ?", ["a"], doubled) is None


def test_unknown_backend_is_a_config_error(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text(config_text(tmp_path, 'vhostdb.backend = "oracle"', ("mod_vhostdb",)))
    with pytest.raises(RuntimeError, match="vhostdb.backend not supported: oracle"):
        WorkerProcess(conf)
