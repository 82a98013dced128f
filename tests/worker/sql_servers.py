"""Real PostgreSQL and MariaDB servers for tests, each started in a temporary directory on
a loopback port (never the system's services), with a user `web` (password `webpw`)
and a database `site`; `run_sql` feeds them statements through their own clients.
The directory is one the servers' own users can reach (pytest's are root's alone) and
is removed by stop().
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from held_backend import free_port

PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), "")
MARIADBD = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
MARIADB_INSTALL = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
MARIADB = shutil.which("mariadb") or shutil.which("mysql")
needs_postgres = pytest.mark.skipif(
    not os.access(os.path.join(PG_BIN, "postgres"), os.X_OK),
    reason="PostgreSQL is not installed (Debian: postgresql)")
needs_mariadb = pytest.mark.skipif(
    not (os.access(MARIADBD, os.X_OK) and MARIADB_INSTALL and MARIADB),
    reason="MariaDB is not installed (Debian: mariadb-server)")
START_TIMEOUT = 30.0
USER, PASSWORD, DBNAME = "web", "webpw", "site"


def _as_user(user: str) -> dict[str, str]:
    """Popen arguments running the server as `user` when we are root (both refuse to
    run as root, or want to be told): the process started is the server itself, so
    signals reach it."""
    return {"user": user, "group": user} if os.geteuid() == 0 else {}


def _wait_port(process: subprocess.Popen, port: int, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait(timeout=5)
    raise RuntimeError(f"{name} did not listen in time")


def _stop(process: subprocess.Popen, base: Path, signum: int) -> None:
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    shutil.rmtree(base, ignore_errors=True)


def _started(server: "Postgres | MariaDB", setup: Callable[[], object]) -> None:
    """Wait for the server to listen, then set it up; stopped if either fails."""
    try:
        _wait_port(server.process, server.port, type(server).__name__)
        setup()
    except BaseException:
        server.stop()
        raise


def _server_dir(prefix: str, owner: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    if os.geteuid() == 0:
        shutil.chown(base, owner, owner)
    return base


class Postgres:
    """postgres on 127.0.0.1:port and a unix socket in its directory."""

    def __init__(self) -> None:
        self.base = base = _server_dir("pylighttpd-pg-", "postgres")
        self.data = base / "data"
        subprocess.run([f"{PG_BIN}/initdb", "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "--no-sync"],
                       check=True, capture_output=True, timeout=60, **_as_user("postgres"))
        self.port = free_port()
        self.process = subprocess.Popen(
            [f"{PG_BIN}/postgres", "-D", str(self.data), "-k", str(base),
             "-p", str(self.port), "-h", "127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_as_user("postgres"))
        _started(self, lambda: (
            self.run_sql(f"CREATE USER {USER} PASSWORD '{PASSWORD}'", "postgres"),
            self.run_sql(f"CREATE DATABASE {DBNAME} OWNER {USER}", "postgres")))

    def run_sql(self, sql: str, dbname: str = DBNAME) -> str:
        """Statements run as the superuser through psql."""
        done = subprocess.run(
            [f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "postgres", "-d", dbname, "-c", sql],
            check=True, capture_output=True, text=True, timeout=30)
        return done.stdout

    def stop(self) -> None:
        """SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for its clients)."""
        _stop(self.process, self.base, signal.SIGINT)


class MariaDB:
    """mariadbd on 127.0.0.1:port and a unix socket in its directory."""

    def __init__(self) -> None:
        self.base = base = _server_dir("pylighttpd-mariadb-", "mysql")
        self.socket = base / "mysqld.sock"
        subprocess.run([MARIADB_INSTALL, "--no-defaults", f"--datadir={base / 'data'}",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120, **_as_user("mysql"))
        self.port = free_port()
        self.process = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={base / 'data'}",
             f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
             "--skip-log-bin", f"--pid-file={base / 'mysqld.pid'}",
             "--innodb-buffer-pool-size=16M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_as_user("mysql"))
        _started(self, lambda: self.run_sql(
            f"CREATE DATABASE {DBNAME}; CREATE USER '{USER}'@'%' IDENTIFIED BY "
            f"'{PASSWORD}'; GRANT ALL ON {DBNAME}.* TO '{USER}'@'%'", ""))

    def run_sql(self, sql: str, dbname: str = DBNAME) -> str:
        """Statements run as root through the unix socket."""
        done = subprocess.run([MARIADB, "--no-defaults", f"--socket={self.socket}", "-uroot",
                               "-N", "-B", *([dbname] if dbname else []), "-e", sql],
                              check=True, capture_output=True, text=True, timeout=30)
        return done.stdout

    def stop(self) -> None:
        """Killed: a clean InnoDB shutdown takes seconds, and its files go anyway."""
        _stop(self.process, self.base, signal.SIGKILL)
