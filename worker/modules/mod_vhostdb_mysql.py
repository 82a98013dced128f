"""mod_vhostdb_mysql: the `mysql` backend of mod_vhostdb (worker/vhostdb_sql.py).

`vhostdb.mysql = ( "sql" => "SELECT docroot FROM vhosts WHERE host='?'", "dbname" =>
..., "host", "port", "sock", "user", "password" )` with PyMySQL; a single row answers.
Lookups run in a thread of the worker, never in its event loop.
"""

from __future__ import annotations

from ..vhostdb_sql import sql_vhost_module

Module = sql_vhost_module("mysql", "mysql", single_row=True)
DIRECTIVES = Module.directives
