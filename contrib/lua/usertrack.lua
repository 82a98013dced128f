-- A tracking cookie, as mod_usertrack set it (lighttpd retired the module for
-- this script): a client that does not send the cookie NAME gets one holding a
-- fresh id, an md5 of the client's address, the time and a random draw.
--
--   magnet.attract-response-start-to = ( "/etc/lighttpd/lua/usertrack.lua" )

local NAME = "TRACKID"
local MAX_AGE = 365 * 24 * 3600
local DOMAIN = nil                          -- e.g. "example.org" for its subdomains too

local r = lighty.r
local cookies = r.req_header["Cookie"]
if cookies and lighty.c.cookie_tokens(cookies)[NAME] then
    return 0
end
local seed = r.req_attr["request.remote-addr"] .. ":" .. lighty.c.time() .. ":" .. lighty.c.rand()
local cookie = NAME .. "=" .. lighty.c.md("md5", seed):lower() .. "; Path=/; Max-Age=" .. MAX_AGE
if DOMAIN then
    cookie = cookie .. "; Domain=" .. DOMAIN
end
r.resp_header["Set-Cookie"] = cookie
