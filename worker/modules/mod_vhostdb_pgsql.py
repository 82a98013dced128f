"""mod_vhostdb_pgsql: the `pgsql` backend of mod_vhostdb (worker/vhostdb_sql.py).

`vhostdb.pgsql = ( "sql" => "SELECT docroot FROM vhosts WHERE host='?'", "dbname" =>
..., "host", "port", "user", "password" )` with psycopg; a single row answers.
Lookups run in a thread of the worker, never in its event loop.
"""

from __future__ import annotations

from ..vhostdb_sql import sql_vhost_module

Module = sql_vhost_module("pgsql", "pgsql", single_row=True)
DIRECTIVES = Module.directives
