-- Content negotiation for images: a client whose Accept header names image/webp
-- gets the WebP variant of a JPEG or PNG when one lies beside it
-- (photo.jpg -> photo.jpg.webp); every answer for such an image carries
-- "Vary: Accept" so that caches keep the variants apart.  The variant's
-- Content-Type comes from mimetype.assign (".webp" => "image/webp").
--
--   magnet.attract-physical-path-to = ( "/etc/lighttpd/lua/webp-negotiation.lua" )

local attr = lighty.r.req_attr
local path = attr["physical.path"]
if not path or not (path:match("%.jpe?g$") or path:match("%.png$")) then
    return 0
end
lighty.r.resp_header["Vary"] = "Accept"
local accept = lighty.r.req_header["Accept"]
if not accept or not accept:find("image/webp", 1, true) then
    return 0
end
local variant = path .. ".webp"
local found = lighty.c.stat(variant)
if found and found.is_file then
    attr["physical.path"] = variant
end
