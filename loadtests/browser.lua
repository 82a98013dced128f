-- wrk script: production-shaped GETs over bench.py's file set, with browser headers.
--
--   wrk -s browser.lua URL -- FILES DIRECTORIES LISTINGS MIX LAST_MODIFIED VARY_QUERY
--
-- FILES files /files/dNN/imgNNNNN.jpg (file i in directory i % DIRECTORIES), LISTINGS
-- directories /lists/lNN/, MIX the kinds of request cycled through in a fixed order
-- ("file:12,revalidate:3,range:2,missing:2,listing:1"), LAST_MODIFIED the files'
-- Last-Modified (sent as If-Modified-Since by "revalidate"), VARY_QUERY "1" to add a
-- new query string to every target (no cached answer can serve it).
--
-- Everything is computed in init; request() only picks and concatenates.  There is no
-- response(): defining it makes wrk parse every answer in Lua.

local AGENTS = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 Edg/119.0.2151.72",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
}
local ACCEPTS = {
  "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
  "image/avif,image/webp,*/*",
  "image/webp,*/*",
  "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
}
local LANGUAGES = {
  "en-US,en;q=0.9", "en-GB,en;q=0.8", "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
  "fr-FR,fr;q=0.9,en;q=0.8", "es-ES,es;q=0.9", "ja,en-US;q=0.9,en;q=0.8",
}
local ENCODINGS = { "gzip, deflate, br", "gzip, deflate", "gzip, deflate, br, zstd", "br;q=1.0, gzip;q=0.8, *;q=0.1" }
local FETCH_HEADERS = {   -- what Chromium and Firefox add; Safari before 16.4 sends none
  "Sec-Fetch-Dest: image\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\n",
  "",
}
local HEADER_BLOCKS = 1024   -- distinct header sets a thread cycles through at random
local MISSING_NAMES = 1000

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local random = math.random
local files, missing, listings, blocks, kinds, extras = {}, {}, {}, {}, {}, {}
local nfiles, nmissing, nlistings, nkinds = 0, 0, 0, 0
local vary_query = false
local FILE, REVALIDATE, RANGE, MISSING, LISTING = 1, 2, 3, 4, 5
local KIND = { file = FILE, revalidate = REVALIDATE, range = RANGE, missing = MISSING, listing = LISTING }

local function pick(list)
  return list[random(#list)]
end

local function session_id()
  local digits = {}
  for i = 1, 32 do digits[i] = string.format("%x", random(0, 15)) end
  return table.concat(digits)
end

local function header_block(host)
  local referer = random(4) == 1 and "https://www.google.com/"
    or string.format("http://%s/gallery/page-%d.html", host, random(200))
  return "Host: " .. host .. "\r\nUser-Agent: " .. pick(AGENTS) .. "\r\nAccept: " .. pick(ACCEPTS)
    .. "\r\nAccept-Language: " .. pick(LANGUAGES) .. "\r\nAccept-Encoding: " .. pick(ENCODINGS)
    .. "\r\nReferer: " .. referer .. "\r\nCookie: SESSIONID=" .. session_id()
    .. "; theme=" .. pick({ "light", "dark" }) .. "; _ga=GA1.1." .. random(1e9) .. "." .. random(1e9)
    .. "\r\nConnection: keep-alive\r\n" .. pick(FETCH_HEADERS)
end

local function cycle_of_kinds(mix)
  local cycle = {}
  for name, count in string.gmatch(mix, "(%a+):(%d+)") do
    for _ = 1, tonumber(count) do cycle[#cycle + 1] = KIND[name] end
  end
  for i = #cycle, 2, -1 do   -- a fixed interleaving, the same count of each per cycle
    local j = random(i)
    cycle[i], cycle[j] = cycle[j], cycle[i]
  end
  return cycle
end

function init(args)
  math.randomseed(7919 * id)
  nfiles = tonumber(args[1])
  local directories, nlisting_dirs = tonumber(args[2]), tonumber(args[3])
  kinds = cycle_of_kinds(args[4])
  nkinds = #kinds
  vary_query = args[6] == "1"
  for i = 0, nfiles - 1 do
    files[i + 1] = string.format("/files/d%02d/img%05d.jpg", i % directories, i)
  end
  for i = 1, MISSING_NAMES do
    missing[i] = string.format("/files/d%02d/missing%05d.jpg", i % directories, i)
  end
  for i = 0, nlisting_dirs - 1 do listings[i + 1] = string.format("/lists/l%02d/", i) end
  nmissing, nlistings = #missing, #listings
  for i = 1, HEADER_BLOCKS do blocks[i] = header_block(wrk.headers["Host"]) end
  extras = { "\r\n", "If-Modified-Since: " .. args[5] .. "\r\n\r\n",
             "Range: bytes=0-1023\r\n\r\n", "\r\n", "\r\n" }
end

local slot, sent = 0, 0
function request()
  slot = slot % nkinds + 1
  local kind = kinds[slot]
  local target
  if kind == LISTING then
    target = listings[random(nlistings)]
  elseif kind == MISSING then
    target = missing[random(nmissing)]
  else
    target = files[random(nfiles)]
  end
  if vary_query then
    sent = sent + 1
    target = target .. "?" .. id .. "." .. sent
  end
  return "GET " .. target .. " HTTP/1.1\r\n" .. blocks[random(HEADER_BLOCKS)] .. extras[kind]
end
