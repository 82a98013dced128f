"""SQL databases as lighttpd's SQL modules use them (mod_authn_dbi, mod_vhostdb_dbi,
mod_vhostdb_pgsql, mod_vhostdb_mysql): a query template whose `?` are replaced by
values escaped by the database's own rules, the first column of the answer read.

- sqlite3 (the standard library): `dbname` in `sqlite3_dbdir` (libdbi's options), opened
  for reading and writing but never created;
- pgsql, with psycopg 3: escaped by libpq's PQescapeStringConn (psycopg.pq.Escaping);
- mysql (MySQL, MariaDB), with PyMySQL: escaped by the connection (it follows the
  server's NO_BACKSLASH_ESCAPES).

Everything here blocks: it runs in a worker's OffLoop thread (worker/authn.py), never
in the event loop.  A `Database` keeps one connection, shared under a lock, opened at
first use and opened again once when a query fails on it (lighttpd reconnects too).
Connecting and each query wait at most `timeout` seconds (option `timeout`, 5 s by
default).  A value holding a NUL byte matches nothing (SQL text cannot carry it).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from shared.config.directives import DirectiveValueError
from shared.config.values import Array

DEFAULT_TIMEOUT = 5.0
SQLITE_DIR = "/var/lib/libdbi/sqlite3"     # libdbi's default sqlite3_dbdir
DBTYPES = ("sqlite3", "pgsql", "mysql")


class DatabaseError(Exception):
    """The database could not be asked (down, slow, refused us, bad query): logged by
    the caller with what it was asking."""


@dataclass(frozen=True)
class Settings:
    """How to reach one database: its type and lighttpd's options for it (names as
    libdbi's: host, port, username, password, dbname, encoding, timeout,
    sqlite3_dbdir; mod_vhostdb_pgsql/mysql's `user` and `sock` are read too)."""

    dbtype: str
    options: tuple[tuple[str, str], ...]

    def get(self, *names: str, default: str = "") -> str:
        for key, value in self.options:
            if key in names:
                return value
        return default

    @property
    def timeout(self) -> float:
        text = self.get("timeout")
        return float(text) if text.replace(".", "", 1).isdigit() and float(text) > 0 \
            else DEFAULT_TIMEOUT


def sql_options(value: Any, key: str, dbtype: str = "") -> tuple[str, Settings] | None:
    """(query, database) from a lighttpd SQL options array (its "dbtype" unless the key
    is of one type, as vhostdb.pgsql); None when "sql", the type or "dbname" is missing
    (the key is then left unconfigured, as lighttpd does)."""
    if not isinstance(value, Array) or (len(value) and not value.has_keys()):
        raise DirectiveValueError(f'unexpected value for {key}; expected list of '
                                  f'"option" => "value"')
    options = {str(k).lower(): item for k, item in value}
    sql = str(options.pop("sql", ""))
    dbtype = dbtype or str(options.pop("dbtype", ""))
    if not sql.strip() or not dbtype or "dbname" not in options:
        return None
    return sql, _database_settings(dbtype, options, key)


def _database_settings(dbtype: str, options: dict[str, Any], key: str) -> Settings:
    """Settings for a known database type whose client library is installed (values
    as text, as the drivers take them)."""
    if dbtype not in DBTYPES:
        raise DirectiveValueError(f"{key}: dbtype {dbtype!r} not supported "
                                  f"(one of {', '.join(DBTYPES)})")
    library = {"pgsql": "psycopg", "mysql": "pymysql"}.get(dbtype)
    if library is not None:
        try:
            __import__(library)
        except ImportError:
            raise DirectiveValueError(f"{key}: dbtype {dbtype} needs the Python package "
                                      f"{library}") from None
    return Settings(dbtype, tuple(sorted((name, str(item)) for name, item in options.items())))


def build_query(template: str, values: list[str], escape: Callable[[str], str]) -> str | None:
    """The template with its first `?` replaced by the first value escaped, and so on;
    None when it has more `?` than values (lighttpd refuses such a query)."""
    parts = template.split("?")
    if len(parts) - 1 > len(values):
        return None
    out = [parts[0]]
    for value, part in zip(values, parts[1:]):
        out.append(escape(value))
        out.append(part)
    return "".join(out)


@dataclass(eq=False)
class Database:
    """One database's connection, shared by the threads that ask it."""

    settings: Settings
    lock: threading.Lock = field(default_factory=threading.Lock)
    connection: Any = None

    def first_value(self, template: str, values: list[str], single: bool = False) -> str | None:
        """The first column of the first row the query answers (of its only row when
        `single`), None when there is none or a value holds a NUL byte."""
        if any("\0" in value for value in values):
            return None
        with self.lock:
            try:
                rows = self._query_once(template, values)
            except _ERRORS:                 # the connection broke: once more, anew
                self._drop()
                try:
                    rows = self._query_once(template, values)
                except _ERRORS as err:
                    self._drop()
                    raise DatabaseError(f"{self.settings.dbtype}: {err}") from None
        if not rows or (single and len(rows) != 1) or rows[0][0] is None:
            return None
        value = rows[0][0]
        return value.decode("utf-8", "surrogateescape") \
            if isinstance(value, (bytes, bytearray, memoryview)) else str(value)

    def _query_once(self, template: str, values: list[str]) -> list[tuple]:
        """Up to two rows of the query (two tell whether it had a single one)."""
        connection = self._connection()
        query = build_query(template, values, _ESCAPES[self.settings.dbtype](connection))
        if query is None:
            raise DatabaseError(f"too many '?' in: {template}")
        cursor = connection.cursor()
        try:
            cursor.execute(query)
            return list(cursor.fetchmany(2))
        finally:
            cursor.close()

    def _connection(self) -> Any:
        if self.connection is None:
            self.connection = _CONNECT[self.settings.dbtype](self.settings)
        return self.connection

    def _drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; dropped anyway
                pass
        self.connection = None


# ------------------------------------------------------------------------ drivers
def _sqlite_connect(settings: Settings) -> sqlite3.Connection:
    name = settings.get("dbname")
    path = os.path.join(settings.get("sqlite3_dbdir", default=SQLITE_DIR), name)
    connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=settings.timeout,
                                 check_same_thread=False, isolation_level=None)
    connection.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    return connection


def _sqlite_escape(_connection: Any) -> Callable[[str], str]:
    return lambda value: value.replace("'", "''")


def _pgsql_connect(settings: Settings) -> Any:
    import psycopg
    params = {"dbname": settings.get("dbname"), "host": settings.get("host") or None,
              "port": settings.get("port") or None,
              "user": settings.get("username", "user") or None,
              "password": settings.get("password") or None,
              "connect_timeout": max(1, round(settings.timeout)),
              "options": f"-c statement_timeout={int(settings.timeout * 1000)}"}
    encoding = settings.get("encoding")
    if encoding and encoding.lower() != "auto":
        params["client_encoding"] = encoding
    return psycopg.connect(autocommit=True,
                           **{key: value for key, value in params.items() if value})


def _pgsql_escape(connection: Any) -> Callable[[str], str]:
    from psycopg import pq
    escaping = pq.Escaping(connection.pgconn)
    encoding = connection.info.encoding
    return lambda value: escaping.escape_string(
        value.encode(encoding, "surrogateescape")).decode(encoding, "surrogateescape")


def _mysql_connect(settings: Settings) -> Any:
    import pymysql
    encoding = settings.get("encoding", default="utf8mb4").lower()
    charset = "utf8mb4" if encoding in ("utf-8", "utf8", "auto", "") else encoding
    return pymysql.connect(
        host=settings.get("host") or "localhost", port=int(settings.get("port") or 3306),
        user=settings.get("username", "user") or None,
        password=settings.get("password"), database=settings.get("dbname"),
        unix_socket=settings.get("sock") or None, charset=charset, autocommit=True,
        connect_timeout=settings.timeout, read_timeout=settings.timeout,
        write_timeout=settings.timeout)


def _mysql_escape(connection: Any) -> Callable[[str], str]:
    """The connection's quoting (backslashes, or doubled quotes under the server's
    NO_BACKSLASH_ESCAPES) without the quotes: the template has its own."""
    return lambda value: connection.escape(value)[1:-1]


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a query may end with: the database's, and the network's."""
    errors: list[type[BaseException]] = [sqlite3.Error, OSError]
    try:
        import psycopg
        errors.append(psycopg.Error)
    except ImportError:
        pass
    try:
        import pymysql
        errors.append(pymysql.err.MySQLError)
    except ImportError:
        pass
    return tuple(errors)


_CONNECT: dict[str, Callable[[Settings], Any]] = {
    "sqlite3": _sqlite_connect, "pgsql": _pgsql_connect, "mysql": _mysql_connect}
_ESCAPES: dict[str, Callable[[Any], Callable[[str], str]]] = {
    "sqlite3": _sqlite_escape, "pgsql": _pgsql_escape, "mysql": _mysql_escape}
_ERRORS = _driver_errors()
