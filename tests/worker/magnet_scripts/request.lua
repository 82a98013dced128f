-- the request API: what a script reads of a request and how it answers
local r = lighty.r
local path = r.req_attr["uri.path"]:gsub("^/raw/", "/")
if path == "/attrs" then
  local out = {}
  for _, key in ipairs({"uri.path", "uri.path-raw", "uri.query", "uri.scheme",
                        "request.method", "request.uri", "request.orig-uri",
                        "request.remote-addr", "request.protocol", "physical.rel-path",
                        "request.path-info", "no.such"}) do
    out[#out + 1] = key .. "=" .. tostring(r.req_attr[key])
  end
  out[#out + 1] = "hdr=" .. tostring(r.req_header["X-Test"]) .. " " .. tostring(lighty.request["x-test"])
    .. " " .. tostring(r.req_header["X-None"])
  r.req_header["X-Test"] = "changed"
  out[#out + 1] = "hdr2=" .. tostring(r.req_header["x-test"])
  r.req_env["MAGNET_VAR"] = "v"
  out[#out + 1] = "env=" .. tostring(r.req_env["MAGNET_VAR"]) .. " " .. tostring(lighty.req_env["MAGNET_VAR"])
  out[#out + 1] = "item=" .. tostring(r.req_item["keep_alive"]) .. " " .. tostring(r.req_item["http_status"])
  out[#out + 1] = "bad=" .. tostring(pcall(function() return r.req_item["nope"] end))
  r.resp_header["X-One"] = "1"
  r.resp_header["X-Two"] = "2"
  r.resp_header["X-Two"] = ""
  out[#out + 1] = "resp=" .. tostring(r.resp_header["x-one"]) .. " " .. tostring(r.resp_header["X-Two"])
  r.resp_body.set({table.concat(out, "\n"), "\n"})
  return 200
elseif path == "/files" then
  local dir = r.req_attr["physical.doc-root"]
  r.resp_body.set({"start\n", {filename = dir .. "/index.html"}})
  r.resp_body.add({{filename = dir .. "/index.html", offset = 1, length = 3}, "\nend\n"})
  r.resp_body.add("more\n")
  r.resp_header["Content-Type"] = "text/plain"
  return 200
elseif path == "/body" then
  local out = {}
  for _, key in ipairs({"len", "get", "collect", "add", "bytes_out"}) do
    out[#out + 1] = key .. "=" .. tostring(r.req_body[key])
  end
  out[#out + 1] = "bad=" .. tostring(pcall(function() return r.req_body.nope end))
  out[#out + 1] = "resp=" .. tostring(r.resp_body.len) .. " " .. tostring(r.resp_body.bytes_out)
  r.resp_body.set({table.concat(out, "\n"), "\n"})
  return 200
elseif path == "/legacy" then
  lighty.header["X-Legacy"] = "old"
  lighty.content = {"legacy ", "body\n"}
  return 202
elseif path == "/status" then
  return "203"
elseif path == "/rewrite" then
  r.req_attr["uri.path"] = "/index.html"
  return lighty.RESTART_REQUEST
elseif path == "/restart-loop" then
  return lighty.RESTART_REQUEST
elseif path == "/physical" then
  r.req_attr["physical.path"] = r.req_attr["physical.doc-root"] .. "/other.txt"
elseif path == "/error" then
  error("raised on purpose")
elseif path == "/stat" then
  local st = lighty.c.stat(r.req_attr["physical.doc-root"] .. "/index.html")
  r.resp_body.set({tostring(st.is_file), " ", tostring(st.is_dir), " ", tostring(st.st_size),
                   " ", tostring(lighty.c.stat("/no/such/file")), "\n"})
  return 200
end
r.resp_header["X-Magnet"] = "passed"
