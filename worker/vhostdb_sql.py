"""The SQL backends of mod_vhostdb (mod_vhostdb_dbi, _pgsql, _mysql): the query's every
`?` is the request's authority, escaped by the database's rules; the first column of
the answer is the document root (of the first row for dbi, of the only row for pgsql
and mysql, as lighttpd 1.4.69 reads them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.config.directives import Directive, Type

from . import vhostdb_backends
from .module import Module as BaseModule
from .sql_database import Database, DatabaseError, Settings, sql_options
from .vhostdb_backends import Lookup, LookupFailed

if TYPE_CHECKING:
    from .request import Request
    from .services import Services


class SqlVhosts:
    """A vhostdb backend over the databases a config key (vhostdb.dbi ...) names."""

    def __init__(self, key: str, single_row: bool) -> None:
        self.key = key
        self.single_row = single_row
        self.databases: dict[Settings, Database] = {}

    def lookup(self, request: "Request", authority: str) -> Lookup | None:
        configured = request.settings.values[self.key]
        if configured is None:
            return None
        sql, settings = configured
        database = self.databases.get(settings)
        if database is None:
            database = self.databases[settings] = Database(settings)
        values = [authority] * sql.count("?")
        single_row = self.single_row

        def step() -> str:
            try:
                return database.first_value(sql, values, single_row) or ""
            except DatabaseError as err:
                raise LookupFailed(str(err)) from None
        return step


def sql_vhost_module(kind: str, dbtype: str, single_row: bool) -> type[BaseModule]:
    """The module class of one SQL backend: its key `vhostdb.<kind>` (of one database
    type, or of the type its "dbtype" names when `dbtype` is empty), declared now,
    registered when the worker builds the module."""
    key = f"vhostdb.{kind}"
    vhostdb_backends.BACKENDS.declare(kind)

    class Module(BaseModule):
        name = f"vhostdb_{kind}"
        directives = (Directive(key, Type.ARRAY_KVANY, None,
                                convert=lambda value: sql_options(value, key, dbtype)),)

        def __init__(self, config: Any, services: "Services | None" = None) -> None:
            super().__init__(config, services)
            vhostdb_backends.BACKENDS.register(kind, SqlVhosts(key, single_row))

    return Module
