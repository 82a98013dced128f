-- Headers on every answer, as mod_setenv's setenv.set-response-header and
-- mod_expire's expire.url do: security headers everywhere, a day of caching for
-- what lies under /static/.  Run at response start, it covers the answers of every
-- module, error pages included.
--
--   magnet.attract-response-start-to = ( "/etc/lighttpd/lua/response-headers.lua" )

local STATIC_PREFIX = "/static/"
local STATIC_MAX_AGE = 86400

local headers = lighty.r.resp_header
headers["X-Content-Type-Options"] = "nosniff"
headers["X-Frame-Options"] = "SAMEORIGIN"
headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
if lighty.r.req_attr["uri.path"]:sub(1, #STATIC_PREFIX) == STATIC_PREFIX then
    headers["Cache-Control"] = "public, max-age=" .. STATIC_MAX_AGE
end
