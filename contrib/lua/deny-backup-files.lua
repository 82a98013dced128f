-- Refuse editor backups and include files, as mod_access's
--   url.access-deny = ( "~", ".inc" )
-- does: a URL path ending in "~" or ".inc" is answered 403.
--
--   magnet.attract-physical-path-to = ( "/etc/lighttpd/lua/deny-backup-files.lua" )

local path = lighty.r.req_attr["uri.path"]
if path:sub(-1) == "~" or path:sub(-4) == ".inc" then
    return 403
end
