-- HTTP Basic authentication in a few lines, for what mod_auth with a plain user
-- file does: a request without valid credentials for REALM is answered 401 with
-- a WWW-Authenticate challenge; a valid one goes on with REMOTE_USER set for the
-- backends.  Replace USERS by your own (or a lookup of your own).
--
--   $HTTP["url"] =~ "^/private/" {
--       magnet.attract-physical-path-to = ( "/etc/lighttpd/lua/auth-basic.lua" )
--   }

local REALM = "private"
local USERS = { admin = "change-me" }       -- user name => password

local r = lighty.r

local function authenticated_user()
    local header = r.req_header["Authorization"]
    if not header then
        return nil
    end
    local scheme, token = header:match("^(%S+)%s+(%S+)%s*$")
    if not scheme or scheme:lower() ~= "basic" then
        return nil
    end
    local user, password = (lighty.c.b64dec(token) or ""):match("^([^:]*):(.*)$")
    local expected = user and USERS[user]
    if expected and lighty.c.secret_eq(password, expected) then
        return user
    end
    return nil
end

local user = authenticated_user()
if user then
    r.req_env["REMOTE_USER"] = user
    return 0
end
r.resp_header["WWW-Authenticate"] = 'Basic realm="' .. REALM .. '", charset="UTF-8"'
return 401
