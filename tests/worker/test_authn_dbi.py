"""mod_authn_dbi against sqlite3, a real PostgreSQL and a real MariaDB started by the test:
each kind of stored password, Digest from the stored H(A1), SQL injection attempts in
user names, and a database that is down or hangs (the login fails, bounded by the
timeout, while the worker keeps serving others)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import sqlite3
import subprocess
import time

import pytest

from held_backend import Blackhole, answers_at, free_port, lighttpd_beside, served_meanwhile
from server_util import WorkerProcess, config_text
from sql_servers import DBNAME, PASSWORD, USER, MariaDB, Postgres, needs_mariadb, needs_postgres

pytest.importorskip("passlib", reason="mod_authn_file (crypt hashes) needs passlib")
psycopg = pytest.importorskip("psycopg", reason="mod_authn_dbi's pgsql needs psycopg")
pymysql = pytest.importorskip("pymysql", reason="mod_authn_dbi's mysql needs PyMySQL")
pytestmark = [needs_postgres, needs_mariadb]
CURL = shutil.which("curl")
REALM = "r"
SHA512_CRYPT_ALICE = ("$6$XGPKyBYmle2UePMc$RB/drkYU9gJkeSncnoZh68lw1/Fd2vGxWorcmKX.T3fLpjvH0T"
                      "R92VhKp74TlUc41SyzNrwYkbtpU.uF5ccQb1")   # "alice-pw"


def _ha1(algorithm: str, user: str, password: str) -> str:
    return hashlib.new(algorithm, f"{user}:{REALM}:{password}".encode()).hexdigest()


ROWS = [("alice", SHA512_CRYPT_ALICE), ("bob", _ha1("md5", "bob", "bob-pw")),
        ("carol", _ha1("sha256", "carol", "carol-pw")), ("dave", "ERROR"),
        ("o'neil", _ha1("md5", "o'neil", "quote-pw")), ("plain", "plain-pw")]
CREATE = "CREATE TABLE users (name VARCHAR(64), realm VARCHAR(64), passwd VARCHAR(200))"
SQL = "SELECT passwd FROM users WHERE name='?' AND realm='?'"
KINDS = ("sqlite", "pg", "my")
UNREACHABLE = ("down", "slow")
INJECTIONS = ["x' OR '1'='1", "x' OR 1=1 -- ", "x\\' OR 1=1 -- ", "alice' -- ", "alice'#", "x\\"]


def _inserts() -> str:
    values = ", ".join("('%s', '%s', '%s')" % (user.replace("'", "''"), REALM, passwd)
                       for user, passwd in ROWS)
    return f"{CREATE}; INSERT INTO users VALUES {values}"


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    sqlite_dir = tmp_path_factory.mktemp("sqlite")
    with sqlite3.connect(sqlite_dir / "users.db") as connection:
        connection.executescript(_inserts())
    pg, my = Postgres(), MariaDB()
    try:
        pg.run_sql(_inserts() + f"; ALTER TABLE users OWNER TO {USER}")
        my.run_sql(_inserts())
        yield sqlite_dir, pg, my
    finally:
        pg.stop()
        my.stop()


@pytest.fixture(scope="module")
def site_confs(tmp_path_factory, databases):
    """The config with every backend, and the same without those that cannot be
    reached (lighttpd connects at start-up and refuses to start without them)."""
    sqlite_dir, pg, my = databases
    base = tmp_path_factory.mktemp("dbisite")
    docroot = base / "www"
    for folder in KINDS + ("down", "slow", "digest"):
        (docroot / folder).mkdir(parents=True)
        (docroot / folder / "index.txt").write_text(f"in {folder}\n")
    (docroot / "index.txt").write_text("open\n")
    hole = Blackhole()
    backends = {
        "sqlite": f'"dbtype" => "sqlite3", "dbname" => "users.db", '
                  f'"sqlite3_dbdir" => "{sqlite_dir}"',
        "pg": f'"dbtype" => "pgsql", "dbname" => "{DBNAME}", "host" => "127.0.0.1", '
              f'"port" => {pg.port}, "username" => "{USER}", "password" => "{PASSWORD}"',
        "my": f'"dbtype" => "mysql", "dbname" => "{DBNAME}", "host" => "127.0.0.1", '
              f'"port" => "{my.port}", "username" => "{USER}", "password" => "{PASSWORD}"',
        "down": f'"dbtype" => "pgsql", "dbname" => "x", "host" => "127.0.0.1", '
                f'"port" => "{free_port()}", "username" => "x"',
        "slow": f'"dbtype" => "mysql", "dbname" => "x", "host" => "127.0.0.1", '
                f'"port" => "{hole.port}", "username" => "x", "timeout" => "1"',
        "digest": f'"dbtype" => "sqlite3", "dbname" => "users.db", '
                  f'"sqlite3_dbdir" => "{sqlite_dir}"',
    }
    confs = []
    for conf_name, names in (("dbi.conf", list(backends)),
                             ("reachable.conf", [n for n in backends if n not in UNREACHABLE])):
        conf = base / conf_name
        conf.write_text(config_text(docroot, _auth_config({n: backends[n] for n in names}),
                                    ("mod_auth", "mod_authn_dbi", "mod_staticfile")))
        confs.append(conf)
    yield confs
    hole.close()


def _auth_config(backends: dict[str, str]) -> str:
    rules = ",\n".join(
        f'"/{name}/" => ("method" => "{"digest" if name == "digest" else "basic"}", '
        f'"realm" => "{REALM}", "require" => "valid-user")' for name in backends)
    blocks = "\n".join(f'$HTTP["url"] =~ "^/{name}/" {{ auth.backend.dbi = ("sql" => "{SQL}", '
                       f'{options}) }}' for name, options in backends.items())
    return f'auth.backend = "dbi"\nauth.require = ({rules})\n{blocks}\n'


@pytest.fixture(scope="module")
def worker(site_confs):
    with WorkerProcess(site_confs[0]) as process:
        yield process


def login(user: str, password: str) -> dict[str, str]:
    raw = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def status(worker: WorkerProcess, path: str, user: str, password: str) -> int:
    return worker.request("GET", path, login(user, password))[0]


@pytest.mark.parametrize("kind", KINDS)
def test_each_stored_password_kind(worker, kind):
    path = f"/{kind}/index.txt"
    assert status(worker, path, "alice", "alice-pw") == 200     # SHA-512 crypt
    assert status(worker, path, "bob", "bob-pw") == 200         # MD5 of user:realm:pw
    assert status(worker, path, "carol", "carol-pw") == 200     # SHA-256 of it
    assert status(worker, path, "o'neil", "quote-pw") == 200    # a quote, escaped


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_passwords_and_refused_values(worker, kind):
    path = f"/{kind}/index.txt"
    assert status(worker, path, "alice", "bob-pw") == 401
    assert status(worker, path, "bob", "alice-pw") == 401
    assert status(worker, path, "nobody", "x") == 401
    assert status(worker, path, "dave", "ERROR") == 401         # ERROR is no password
    assert status(worker, path, "plain", "plain-pw") == 401     # neither is plain text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("user", INJECTIONS + ["alice\0"])
def test_sql_injection_in_user_name_finds_nobody(worker, kind, user):
    """Unescaped, each would select alice's row (or the first row): her password would
    then log in."""
    assert status(worker, f"/{kind}/index.txt", user, "alice-pw") == 401


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_digest_from_the_stored_ha1(worker):
    def curl(user: str, password: str) -> str:
        done = subprocess.run([CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               "--digest", "-u", f"{user}:{password}",
                               f"http://127.0.0.1:{worker.port}/digest/index.txt"],
                              capture_output=True, text=True, timeout=20)
        return done.stdout
    assert curl("bob", "bob-pw") == "200"
    assert curl("bob", "wrong") == "401"
    assert curl("alice", "alice-pw") == "401"     # a crypt hash gives no H(A1)


def test_same_answers_as_lighttpd(site_confs, worker):
    """Every kind of stored password and the injection attempts, on each database, as
    lighttpd's mod_authn_dbi (through libdbi) answers them."""
    logins = [(user, password) for user, password in (
        ("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw"), ("o'neil", "quote-pw"),
        ("alice", "bob-pw"), ("nobody", "x"), ("dave", "ERROR"), ("plain", "plain-pw"))]
    logins += [(user, "alice-pw") for user in INJECTIONS]
    exchanges = [(f"/{kind}/index.txt", login(*credentials))
                 for kind in KINDS for credentials in logins]
    with lighttpd_beside(site_confs[1], "mod_auth", "mod_authn_dbi") as theirs:
        theirs_answers = answers_at(theirs, exchanges)
    assert answers_at(worker.port, exchanges) == theirs_answers


def test_database_down_fails_the_login(worker):
    started = time.monotonic()
    assert status(worker, "/down/index.txt", "bob", "bob-pw") == 401
    assert time.monotonic() - started < 5


def test_hanging_database_times_out_while_others_are_served(worker):
    held, other, first = served_meanwhile(
        lambda: status(worker, "/slow/index.txt", "bob", "bob-pw"),
        lambda: worker.request("GET", "/index.txt")[0])
    assert (held, other, first) == (401, 200, True)


def test_unknown_dbtype_is_a_config_error(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text(config_text(tmp_path, 'auth.backend = "dbi"\nauth.backend.dbi = '
                                '("sql" => "SELECT 1", "dbtype" => "oracle", "dbname" => "x")',
                                ("mod_auth", "mod_authn_dbi")))
    with pytest.raises(RuntimeError, match="dbtype"):
        WorkerProcess(conf)
