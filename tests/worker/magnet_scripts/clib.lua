-- lighty.c on fixed inputs: every output is deterministic
local c = lighty.c
local function s(...)
  if select("#", ...) == 0 then return "<none>" end
  return tostring((...))
end
local function sorted(t)
  local keys = {}
  for k, v in pairs(t) do keys[#keys + 1] = k .. "=" .. tostring(v) end
  table.sort(keys)
  return table.concat(keys, ",")
end
local all = {}
for i = 32, 126 do all[#all + 1] = string.char(i) end
all = table.concat(all) .. "\t\1\127\200\255\195\169"
local out = {}
for _, name in ipairs({"urlenc", "xmlenc", "bsenc", "bsenc_json", "quotedenc", "b64enc",
                       "b64urlenc", "hexenc"}) do
  out[#out + 1] = name .. "=" .. c[name](all)
end
out[#out + 1] = "urldec=" .. c.urldec("%41%2F%2f+%zz%4%e2%82%ac%00x")
out[#out + 1] = "norm=" .. c.urlenc_normalize("/a%2fb/%7e/c d/%41%e2%82%ac")
out[#out + 1] = "uq=" .. c.urlenc_query({["a b"] = "x&y=z"})
out[#out + 1] = "fs=" .. c.fspath_simplify("a/../../b/./c//") .. " " ..
                c.fspath_simplify("/../x/..") .. " " .. c.fspath_simplify("/a/b/..")
out[#out + 1] = "qd=" .. s(c.quoteddec('"a\\\\b\\"c"')) .. " " .. s(c.quoteddec("abc"))
out[#out + 1] = "bsd=" .. c.bsdec('a\\tb\\\\c\\"d\\x41\\u00e9\\101z')
out[#out + 1] = "cookie=" .. sorted(c.cookie_tokens(' a=1 ; b = 2;c="q;r"; d; =e; f='))
out[#out + 1] = "htok=" .. table.concat(c.header_tokens('text/html; q=0.5, a="b,c" ,d'), "|")
out[#out + 1] = "md=" .. c.md("md5", "") .. " " .. c.md("sha1", "a") .. " " ..
                c.md("sha256", "abc") .. " " .. c.md("sha512", "a")
out[#out + 1] = "hmac=" .. c.hmac("sha256", "key", "abc") .. " " .. c.hmac("sha1", "k", "")
out[#out + 1] = "b64d=" .. s(c.b64dec("YQ==")) .. s(c.b64dec("YQ")) .. s(c.b64urldec("_-8")) ..
                s(c.b64dec("_-8"))
out[#out + 1] = "hexdec=" .. s(c.hexdec("414243"))
out[#out + 1] = "udq=" .. sorted(c.urldec_query("a=1&a=2&b&c=%41+&=x&d="))
out[#out + 1] = "eq=" .. tostring(c.digest_eq("ab", "AB")) .. tostring(c.secret_eq("ab", "ab"))
  .. tostring(c.secret_eq("ab", "abc"))
out[#out + 1] = "types=" .. math.type(c.time()) .. " " .. math.type(c.rand())
lighty.r.resp_body.set({table.concat(out, "\n"), "\n"})
return 200
