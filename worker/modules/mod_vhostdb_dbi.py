"""mod_vhostdb_dbi: the `dbi` backend of mod_vhostdb (worker/vhostdb_sql.py).

`vhostdb.dbi = ( "sql" => "SELECT docroot FROM vhosts WHERE host='?'", "dbtype" =>
"sqlite3" | "pgsql" | "mysql", "dbname" => ..., "host", "port", "username", "password",
"encoding", "timeout", "sqlite3_dbdir" )`, as auth.backend.dbi (worker/sql_database.py);
the first row answers.
Lookups run in a thread of the worker, never in its event loop.
"""

from __future__ import annotations

from ..vhostdb_sql import sql_vhost_module

Module = sql_vhost_module("dbi", "", single_row=False)
DIRECTIVES = Module.directives
