-- Download links that expire, as mod_secdownload made them (lighttpd retired the
-- module for this script).  A link is
--   PREFIX <token> "/" <timestamp> <rel-path>
-- with the timestamp in hex seconds and the token md5(SECRET .. rel-path ..
-- timestamp) in hex, so a link made by your application, e.g. in PHP
--   $t = dechex(time()); $token = md5($secret . $path . $t);
--   $url = "/dl/" . $token . "/" . $t . $path;
-- serves the document root's file rel-path for TIMEOUT seconds.  A wrong token is
-- answered 403, an expired link 410, a malformed one 403.
--
--   magnet.attract-physical-path-to = ( "/etc/lighttpd/lua/secdownload.lua" )

local PREFIX = "/dl/"
local SECRET = "change-me"
local TIMEOUT = 60                          -- seconds a link lives

local attr = lighty.r.req_attr
local path = attr["uri.path"]
if path:sub(1, #PREFIX) ~= PREFIX then
    return 0
end
local token, stamp, rel_path = path:sub(#PREFIX + 1):match("^(%x+)/(%x+)(/.+)$")
if not token or #token ~= 32 then
    return 403
end
if not lighty.c.digest_eq(lighty.c.md("md5", SECRET .. rel_path .. stamp), token) then
    return 403
end
local age = lighty.c.time() - tonumber(stamp, 16)
if age > TIMEOUT or age < -TIMEOUT then
    return 410
end
attr["physical.rel-path"] = rel_path
attr["physical.path"] = attr["physical.doc-root"] .. rel_path
