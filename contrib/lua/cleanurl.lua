-- Clean URLs for a front controller (Drupal, WordPress and the like), written in
-- the older interface (lighty.env, lighty.stat) that scripts made for lighttpd
-- before 1.4.60 use, and that 1.4.69 still runs.  A request for a path that is no
-- file goes to FRONT with the path in the query string, as Apache's
--   RewriteCond %{REQUEST_FILENAME} !-f
--   RewriteRule ^(.*)$ index.php?q=$1 [L,QSA]
-- does.  A FastCGI or CGI handler for FRONT then sees QUERY_STRING "q=<path>&<query>".
--
--   magnet.attract-physical-path-to = ( "/etc/lighttpd/lua/cleanurl.lua" )

local FRONT = "/index.php"

local env = lighty.env
local found = lighty.stat(env["physical.path"])
if found and found.is_file then
    return 0
end
local query = "q=" .. env["uri.path"]:sub(2)
if env["uri.query"] then
    query = query .. "&" .. env["uri.query"]
end
env["uri.query"] = query
env["uri.path"] = FRONT
env["physical.rel-path"] = FRONT
env["physical.path"] = env["physical.doc-root"] .. FRONT
