-- One answer for several stylesheets or scripts, to save round trips: a request
-- for /bundle.css?a.css,b.css (or /bundle.js?...) gets the named files of the
-- document root's DIRECTORY one after the other.  Written in the older interface
-- (lighty.header, lighty.content, lighty.env) that scripts made for lighttpd before
-- 1.4.60 use, and that 1.4.69 still runs.  A name that is not a plain file name of
-- the wanted kind, or a file that does not exist, is answered 404.
--
--   $HTTP["url"] =~ "^/bundle\.(css|js)$" {
--       magnet.attract-physical-path-to = ( "/etc/lighttpd/lua/bundle.lua" )
--   }

local DIRECTORY = "/assets/"
local TYPES = { css = "text/css", js = "text/javascript" }
local MAX_FILES = 20

local env = lighty.env
local kind = env["uri.path"]:match("^/bundle%.(%a+)$")
local content_type = kind and TYPES[kind]
local query = env["uri.query"]
if not content_type or not query or query == "" then
    return 404
end

local parts = {}
for name in query:gmatch("[^,]+") do
    if #parts == MAX_FILES or not name:match("^[%w_%-%.]+%." .. kind .. "$")
            or name:match("^%.") then
        return 404
    end
    local path = env["physical.doc-root"] .. DIRECTORY .. name
    local found = lighty.stat(path)
    if not found or not found.is_file then
        return 404
    end
    parts[#parts + 1] = { filename = path }
    parts[#parts + 1] = "\n"
end
lighty.header["Content-Type"] = content_type
lighty.content = parts
return 200
