-- A maintenance page: while the file FLAG exists in the document root, every
-- request is answered 503 with Retry-After and a short page.  Create the file
-- before an upgrade, remove it after; nothing needs a restart.
--
--   magnet.attract-physical-path-to = ( "/etc/lighttpd/lua/maintenance.lua" )

local FLAG = "/.maintenance"
local RETRY_AFTER_SECONDS = 600
local PAGE = "<!DOCTYPE html>\n<title>Down for maintenance</title>\n"
    .. "<p>This site is being upgraded and will be back shortly.</p>\n"

local r = lighty.r
if not lighty.c.stat(r.req_attr["physical.doc-root"] .. FLAG) then
    return 0
end
r.resp_header["Retry-After"] = tostring(RETRY_AFTER_SECONDS)
r.resp_header["Content-Type"] = "text/html; charset=utf-8"
r.resp_body.set({ PAGE })
return 503
