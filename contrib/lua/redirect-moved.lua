-- A permanent redirect for a tree that moved, as mod_redirect's
--   url.redirect = ( "^/old/(.*)$" => "/new/$1" )
-- does, with the scheme and host the client asked for and the query string kept.
-- The rest of the path goes on as the client sent it (still %-encoded).
--
--   magnet.attract-raw-url-to = ( "/etc/lighttpd/lua/redirect-moved.lua" )

local FROM, TO = "/old/", "/new/"

local attr = lighty.r.req_attr
local raw_path = attr["uri.path-raw"]
if raw_path:sub(1, #FROM) ~= FROM then
    return 0
end
local location = attr["uri.scheme"] .. "://" .. attr["uri.authority"]
    .. TO .. raw_path:sub(#FROM + 1)
local query = attr["uri.query"]
if query then
    location = location .. "?" .. query
end
lighty.r.resp_header["Location"] = location
return 301
