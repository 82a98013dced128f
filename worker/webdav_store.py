"""Dead properties and locks of a WebDAV share, in SQLite as lighttpd keeps them
(`webdav.sqlite-db-name`): the same two tables, so a database can move between
lighttpd and pylighttpd, and every worker of the server sees the same locks.

Resources are keyed by their URL path, a collection's with its trailing slash, so the
members of a collection are the keys that start with its path.  A lock's `depth` is 0
or -1 (infinity) and its `timeout` the time it expires (seconds since the epoch).
Writes of one request happen in one transaction: a PROPPATCH is all or nothing.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Final, Iterable

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS properties ("
    " resource TEXT NOT NULL, prop TEXT NOT NULL, ns TEXT NOT NULL,"
    " value TEXT NOT NULL, PRIMARY KEY(resource, prop, ns))",
    "CREATE TABLE IF NOT EXISTS locks ("
    " locktoken TEXT NOT NULL, resource TEXT NOT NULL, lockscope TEXT NOT NULL,"
    " locktype TEXT NOT NULL, owner TEXT NOT NULL, ownerinfo TEXT NOT NULL,"
    " depth INT NOT NULL, timeout TIMESTAMP NOT NULL, PRIMARY KEY(locktoken))",
)
BUSY_TIMEOUT = 0.5     # seconds another worker's transaction may hold the database
INFINITY: Final = -1          # a lock's depth: the resource and all its members
_MEMBERS = "substr(resource, 1, ?) = ?"       # keys below a collection path
_LOCK_COLUMNS = "locktoken, resource, lockscope, locktype, owner, ownerinfo, depth, timeout"


@dataclass
class Lock:
    token: str            # urn:uuid:<uuid>, as lighttpd makes them
    root: str             # the URL path that was locked
    scope: str            # "exclusive" or "shared"
    kind: str             # "write"
    owner: str            # the authenticated user who took it ("" without one)
    owner_xml: str        # the client's <owner> content
    depth: int            # 0 or INFINITY
    expires: int

    def covers(self, path: str) -> bool:
        """Whether this lock applies to the resource at `path`."""
        if path == self.root:
            return True
        return self.depth == INFINITY and self.root.endswith("/") and \
            path.startswith(self.root)


def new_lock_token() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def ancestors(path: str) -> list[str]:
    """`path` and every collection above it: /a/b/c -> /a/b/c, /a/b/, /a/, /."""
    found = [path]
    cut = len(path.rstrip("/"))
    while cut > 0:
        cut = path.rfind("/", 0, cut)
        found.append(path[:cut + 1])
    return found


class Store:
    """The database of one `webdav.sqlite-db-name`."""

    def __init__(self, filename: str) -> None:
        self.db = sqlite3.connect(filename, timeout=BUSY_TIMEOUT, isolation_level=None,
                                  check_same_thread=False)
        for statement in SCHEMA:
            self.db.execute(statement)

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> "_Transaction":
        return _Transaction(self.db, "BEGIN IMMEDIATE")

    def snapshot(self) -> "_Transaction":
        """Reads that see one state of the database, under one shared lock (each
        statement alone would take and drop its own)."""
        return _Transaction(self.db, "BEGIN")

    # ------------------------------------------------------------ properties
    def properties_from(self, path: str, members: bool) -> list[tuple[str, str, str, str]]:
        """(resource, namespace, name, value) of the dead properties of `path` and,
        with `members`, of every resource below it."""
        if members and path.endswith("/"):
            rows = self.db.execute("SELECT resource, ns, prop, value FROM properties "
                                   f"WHERE {_MEMBERS}", (len(path), path))
        else:
            rows = self.db.execute("SELECT resource, ns, prop, value FROM properties "
                                   "WHERE resource = ?", (path,))
        return list(rows)

    def set_property(self, path: str, namespace: str, name: str, value: str) -> None:
        self.db.execute("REPLACE INTO properties (resource, prop, ns, value) "
                        "VALUES (?, ?, ?, ?)", (path, name, namespace, value))

    def remove_property(self, path: str, namespace: str, name: str) -> None:
        self.db.execute("DELETE FROM properties WHERE resource = ? AND prop = ? AND ns = ?",
                        (path, name, namespace))

    def copy_properties(self, source: str, target: str, members: bool = True) -> None:
        """The properties of `source` (and, with `members`, of its members when it is
        a collection) given to `target` as well."""
        with self.transaction():
            self.db.execute("REPLACE INTO properties (resource, prop, ns, value) "
                            "SELECT ?, prop, ns, value FROM properties WHERE resource = ?",
                            (target, source))
            if members and source.endswith("/"):
                self.db.execute(
                    "REPLACE INTO properties (resource, prop, ns, value) "
                    "SELECT ? || substr(resource, ?), prop, ns, value FROM properties "
                    f"WHERE {_MEMBERS} AND resource != ?",
                    (target, len(source) + 1, len(source), source, source))

    def move_properties(self, source: str, target: str) -> None:
        with self.transaction():
            self.forget(target, ("properties",))
            self.db.execute("UPDATE properties SET resource = ? WHERE resource = ?",
                            (target, source))
            if source.endswith("/"):
                self.db.execute("UPDATE properties SET resource = ? || substr(resource, ?) "
                                f"WHERE {_MEMBERS}",
                                (target, len(source) + 1, len(source), source))

    def forget(self, path: str, tables: tuple[str, ...] = ("properties", "locks")) -> None:
        """Drop the properties and locks of `path` and, for a collection, of its
        members (the resources are gone); only the locks when some are left."""
        for table in tables:
            self.db.execute(f"DELETE FROM {table} WHERE resource = ?", (path,))
            if path.endswith("/"):
                self.db.execute(f"DELETE FROM {table} WHERE {_MEMBERS}",
                                (len(path), path))

    # ----------------------------------------------------------------- locks
    def add_lock(self, lock: Lock) -> None:
        self.db.execute(f"INSERT INTO locks ({_LOCK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (lock.token, lock.root, lock.scope, lock.kind, lock.owner,
                         lock.owner_xml, lock.depth, lock.expires))

    def refresh_lock(self, token: str, expires: int) -> None:
        self.db.execute("UPDATE locks SET timeout = ? WHERE locktoken = ?", (expires, token))

    def remove_lock(self, token: str) -> None:
        self.db.execute("DELETE FROM locks WHERE locktoken = ?", (token,))

    def lock(self, token: str) -> Lock | None:
        rows = self._locks("locktoken = ?", (token,))
        return rows[0] if rows else None

    def locks_covering(self, path: str) -> list[Lock]:
        """The live locks that apply to `path`: on it, or on a collection above it
        with depth infinity."""
        above = ancestors(path)
        marks = ", ".join("?" * len(above))
        found = self._locks(f"resource IN ({marks})", above)
        return [lock for lock in found if lock.covers(path)]

    def locks_below(self, path: str) -> list[Lock]:
        """The live locks on members of the collection `path` (not on itself)."""
        if not path.endswith("/"):
            return []
        return self._locks(f"{_MEMBERS} AND resource != ?", (len(path), path, path))

    def _locks(self, where: str, args: Iterable[object]) -> list[Lock]:
        rows = self.db.execute(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE ({where}) "
                               "AND timeout > ?", (*args, int(time.time())))
        return [Lock(*row) for row in rows]

    def purge_expired(self) -> None:
        self.db.execute("DELETE FROM locks WHERE timeout <= ?", (int(time.time()),))


class _Transaction:
    """BEGIN (IMMEDIATE for writes) ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection, begin: str) -> None:
        self.db = db
        self.begin = begin
        self.outer = False

    def __enter__(self) -> "_Transaction":
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute(self.begin)
        return self

    def __exit__(self, kind: object, *_rest: object) -> None:
        if self.outer:
            self.db.execute("ROLLBACK" if kind is not None else "COMMIT")
