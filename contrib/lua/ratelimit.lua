-- A per-client request limit, for what mod_evasive does with connections: a client
-- address that sends more than LIMIT requests within WINDOW seconds is answered
-- 429 Too Many Requests (with Retry-After) until its window ends.
--
-- The counts live in _G, which lasts as long as the script's Lua state (bare
-- globals do not: mod_magnet gives every run fresh ones).  Each server process
-- counts for itself: with server.max-worker = N a client gets up to N x LIMIT.
--
--   magnet.attract-raw-url-to = ( "/etc/lighttpd/lua/ratelimit.lua" )

local LIMIT = 100
local WINDOW = 10                           -- seconds
local MAX_CLIENTS = 10000                   -- counts kept before the old ones go

local now = lighty.c.time()
local clients = _G.ratelimit_clients
if not clients or _G.ratelimit_size > MAX_CLIENTS then
    clients = {}
    _G.ratelimit_clients, _G.ratelimit_size = clients, 0
end

local address = lighty.r.req_attr["request.remote-addr"]
local seen = clients[address]
if not seen or now - seen.since >= WINDOW then
    if not seen then
        _G.ratelimit_size = _G.ratelimit_size + 1
    end
    seen = { since = now, count = 0 }
    clients[address] = seen
end
seen.count = seen.count + 1
if seen.count > LIMIT then
    lighty.r.resp_header["Retry-After"] = tostring(seen.since + WINDOW - now)
    return 429
end
