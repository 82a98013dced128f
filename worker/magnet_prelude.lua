-- The `lighty` table of mod_magnet (lighttpd 1.4.69's Lua API), built once per
-- script state over the Python bridge `B` (worker/magnet_runtime.py), and the runner
-- that calls a script under an instruction budget.
--
-- Arguments: B (the bridge's functions), C (the lighty.c functions), the instruction
-- budget of one run, and how many instructions pass between two budget checks.
-- Returns: compile(source, name) -> runner | nil, message.  runner() runs the script
-- once and returns, in the one crossing back, an integer, 2 * status + repeatable (0
-- or 1), or the message of a failure, followed by the response header writes the
-- Python side has not seen yet (name, value, ...: value nil removes the header).
--
-- `repeatable` says whether the run's effect follows from what the answer cache keys an
-- answer on (worker/answercache.py): the script read no request header but Host, no
-- clock, random draw, environment or file through io, and changed no state shared
-- between its runs.  Shared state is everything reachable from the globals and from
-- `lighty`: scripts see the globals through views (tables whose writes mark the script
-- stateful for as long as its state lives), so a script that keeps anything from one
-- run to the next is never repeatable again.
local B, C, LIMIT, EVERY = ...

local error, pairs, ipairs, next, type, select, setmetatable, tostring, tonumber, load, rawset =
    error, pairs, ipairs, next, type, select, setmetatable, tostring, tonumber, load, rawset
local getmetatable, rawget, rawlen = getmetatable, rawget, rawlen
local tointeger, cocreate, coresume = math.tointeger, coroutine.create, coroutine.resume
local sethook, traceback, getinfo = debug.sethook, debug.traceback, debug.getinfo
local pack, unpack = table.pack, table.unpack

-- A script can neither take the budget hook away nor reach the budget through the
-- runner's upvalues or locals, and a coroutine carries the hook too; os.exit would
-- end the worker with every connection it serves.
for _, name in ipairs({"sethook", "gethook", "getregistry", "setupvalue", "upvaluejoin",
                       "setlocal", "setuservalue"}) do
    debug[name] = nil
end
os.exit = nil
python = nil

-- What makes a run unrepeatable (this run only) or the script stateful (from now on).
local impure, stateful = false, false
local function wrapped(lib, names, mark)
    for _, name in ipairs(names) do
        local fn = lib[name]
        if fn then lib[name] = function(...) mark() return fn(...) end end
    end
end
local function mark_impure() impure = true end
local function mark_stateful() stateful = true end
local io_names = {}
for name, value in pairs(io) do
    if type(value) == "function" then io_names[#io_names + 1] = name end
end
wrapped(io, io_names, mark_impure)
-- io.stdout and the like are files already open: their methods count too
wrapped(getmetatable(io.stdout).__index, {"read", "write", "lines", "seek", "flush", "close",
                                          "setvbuf"}, mark_impure)
-- the address of a table or function made in this run differs from run to run
local function has_address(value)
    local kind = type(value)
    return kind == "table" or kind == "function" or kind == "thread" or kind == "userdata"
end
_G.tostring = function(value)
    if has_address(value) then impure = true end
    return tostring(value)
end
local format = string.format
string.format = function(pattern, ...)     -- %s and %p show such an address
    for i = 1, select("#", ...) do
        if has_address((select(i, ...))) then impure = true end
    end
    return format(pattern, ...)
end
wrapped(os, {"time", "clock", "date", "getenv", "tmpname", "execute", "remove", "rename"},
        mark_impure)
wrapped(math, {"random", "randomseed"}, mark_impure)
wrapped(_G, {"collectgarbage"}, mark_impure)
-- these run code or reach tables outside the views
wrapped(_G, {"dofile", "loadfile", "require"}, mark_stateful)
wrapped(debug, {"getlocal", "getupvalue", "getuservalue", "getmetatable", "setmetatable",
                "upvalueid"}, mark_stateful)

-- Past the budget every instruction of the script fails, so a pcall cannot swallow
-- the error; this file's own functions (the runner, the proxies, the views) still
-- finish.  A thread (the main one, a coroutine) whose count hook finds one of those
-- running checks every instruction from then on: a script's loop through them would
-- otherwise meet the check in them only.
local OWN_SOURCE = getinfo(1, "S").source
local budget, hook = 0, nil
hook = function()
    if budget < 0 then
        if getinfo(2, "S").source == OWN_SOURCE then
            sethook(hook, "", 1)
            return
        end
    else
        budget = budget - EVERY
        if budget >= 0 then return end
        sethook(hook, "", 1)
    end
    error("script exceeded its instruction budget", 2)
end

coroutine.create = function(f)
    local co = cocreate(f)
    sethook(co, hook, "", EVERY)
    return co
end
coroutine.wrap = function(f)
    local co = coroutine.create(f)
    return function(...)
        local results = pack(coresume(co, ...))
        if not results[1] then error(results[2], 2) end
        return unpack(results, 2, results.n)
    end
end

print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    B.print(table.concat(parts, "\t"))
end

local function readonly() error("lua table is read-only", 2) end

-- A table whose reads, writes and pairs() go to the bridge; a bridge function
-- returns (nil, message) for what lighttpd refuses with a Lua error.  `store`, when
-- given, takes the writes itself (a __newindex that never fails).
local function proxy(get, set, list, store)
    local meta = {
        __index = function(_, key)
            local value, err = get(key)
            if err then error(err, 2) end
            return value
        end,
        __newindex = store or function(_, key, value)
            local err = set(key, value)
            if err then error(err, 2) end
        end,
        __metatable = false,
    }
    if list then
        meta.__pairs = function()
            local flat, i = list(), -1
            return function()
                i = i + 2
                if flat[i] ~= nil then return flat[i], flat[i + 1] end
            end
        end
    end
    return setmetatable({}, meta)
end

local function add_parts(parts)
    if type(parts) == "string" then
        B.body_add(parts)
        return
    end
    if type(parts) ~= "table" then error("r.resp_body: expected a string or a table", 3) end
    for _, part in ipairs(parts) do
        if type(part) == "string" then
            B.body_add(part)
        elseif type(part) == "table" and type(part.filename) == "string" then
            local err = B.body_add_file(part.filename, tonumber(part.offset) or 0,
                                        tonumber(part.length) or -1)
            if err then error(err, 3) end
        else
            error("r.resp_body: unexpected part of type " .. type(part), 3)
        end
    end
end

local body_methods = {
    set = function(parts) B.body_clear() add_parts(parts) end,
    add = function(parts) add_parts(parts) end,
}
local resp_body_values = { bytes_in = B.resp_body_length, bytes_out = function() return 0 end,
                           len = B.resp_body_len, get = B.resp_body_get }
-- The request body: `collect` makes the request wait for all of it (the phases run
-- again once it is in, the script with them); `get` gives it then; `set` (which
-- empties it) and `add` give a new one to what follows, as functions once it is in.
local function body_writer(replace)
    return function(parts)
        if type(parts) == "string" then parts = {parts} end
        if type(parts) ~= "table" then return false end
        for i = 1, rawlen(parts) do
            local part = rawget(parts, i)
            if type(part) ~= "string" then
                B.print_error("body[" .. i .. "] table must contain strings")
                break
            end
            B.reqbody_add(part, replace)
            replace = false
        end
        if replace then B.reqbody_add("", true) end
        return true
    end
end
local req_body_values = {
    len = B.reqbody_len,
    get = B.reqbody_get,
    collect = B.reqbody_collect,
    add = function() if B.reqbody_complete() then return body_writer(false) end end,
    set = function() if B.reqbody_complete() then return body_writer(true) end end,
    bytes_in = B.reqbody_bytes_in,
    bytes_out = function() return 0 end,
}

-- Response header writes wait here and go back with the run's result: a call into
-- Python for each costs more than the rest of a small script.  Reading the headers
-- hands the waiting writes over first, in order.
local written, nwritten = {}, 0
local function hand_over_writes()
    for i = 1, nwritten, 2 do B.resp_header_set(written[i], written[i + 1]) end
    nwritten = 0
end
local function resp_header_get(name)
    hand_over_writes()
    return B.resp_header_get(name)
end
local function store_header(_, name, value)
    local n = nwritten
    written[n + 1], written[n + 2] = name, value
    nwritten = n + 2
end
local function resp_header_list()
    hand_over_writes()
    return B.resp_header_list()
end

local r = {
    req_header = proxy(B.header_get, B.header_set, B.header_list),
    req_attr = proxy(B.attr_get, B.attr_set, B.attr_list),
    req_env = proxy(B.env_get, B.env_set, B.env_list),
    req_item = proxy(B.item_get, B.item_set, nil),
    resp_header = proxy(resp_header_get, nil, resp_header_list, store_header),
    resp_body = setmetatable({}, {
        __index = function(_, key)
            local value = resp_body_values[key]
            if value then return value() end
            return body_methods[key]
        end,
        __newindex = readonly, __metatable = false}),
    req_body = setmetatable({}, {
        __index = function(_, key)
            local value = req_body_values[key]
            if value == nil then error("r.req_body invalid method or param", 2) end
            return value()
        end,
        __newindex = readonly, __metatable = false}),
}

-- lighty.server: the server's counters (also lighty.status, the older name) and a
-- few figures; reading or counting them is a side effect no replay may skip.
local function counted(fn) return function(...) impure = true return fn(...) end end
local server = {
    plugin_stats = proxy(counted(B.plugin_stat_get), counted(B.plugin_stat_set),
                         counted(B.plugin_stat_list)),
    stats = proxy(counted(B.server_stat_get), function() return "lua table is read-only" end),
}
setmetatable(server, {__newindex = readonly, __metatable = false})

local c = {}
for name, fn in pairs(C) do c[name] = fn end
wrapped(c, {"time", "hrtime", "rand"}, mark_impure)
-- these count their arguments, as lighttpd's do (its error is a plain string)
for name, signature in pairs({md = "md(algo, data)", hmac = "hmac(algo, secret, data)",
                              digest_eq = "digest_eq(d1, d2)",
                              secret_eq = "secret_eq(d1, d2)"}) do
    local fn, wanted = c[name], select(2, signature:gsub(",", "")) + 1
    c[name] = function(...)
        if select("#", ...) ~= wanted then
            error("lighty.c." .. signature .. ": incorrect number of arguments", 0)
        end
        return fn(...)
    end
end
local readdir_list = c.readdir
c.readdir = function(path)
    local names = readdir_list(path)
    if names == nil then return nil end
    local i = 0
    return function()
        i = i + 1
        return names[i]
    end
end
-- lighty.c.stat's object: the fields lighttpd has, an error for any other, read-only,
-- no pairs(); "http-response-send-file" answers with the file (its status).
local stat_fields = c.stat
local STAT_MAYBE_NIL = {etag = true, ["content-type"] = true}
local STAT_TIMES = {st_mtim = true, st_ctim = true, st_atim = true}
c.stat = function(path)
    local fields = stat_fields(path)
    if fields == nil then return nil end
    return setmetatable({}, {
        __index = function(_, key)
            if key == "http-response-send-file" then return B.send_file(path) end
            local value = fields[key]
            if STAT_TIMES[key] then
                return function() return value[1], value[2] end
            end
            if value == nil and not STAT_MAYBE_NIL[key] then
                error('stat["field"] invalid: ' .. tostring(key), 2)
            end
            return value
        end,
        __newindex = readonly,
        __pairs = function()
            B.print_error("(lua) pairs() not implemented on lighty.stat object; "
                          .. "returning empty iter")
            return function() end
        end,
        __metatable = false,
    })
end
setmetatable(c, {__newindex = readonly, __metatable = false})

-- What the older interface puts in lighty.header / lighty.content goes here.
local result = {}
local lighty = setmetatable({
    r = r,
    c = c,
    request = r.req_header,
    env = r.req_attr,
    req_env = r.req_env,
    stat = c.stat,
    server = server,
    status = server.plugin_stats,
    RESTART_REQUEST = 99,
}, {
    __index = function(_, key)
        local value = result[key]
        if value == nil and (key == "header" or key == "content") then
            value = {}
            result[key] = value
        end
        return value
    end,
    __newindex = function(_, key, value) result[key] = value end,
    __metatable = false,
})

-- Views of the shared tables: reads go through (a table read is seen through a view
-- of its own), writes too, marking the script stateful.  The proxies above (`shared`)
-- guard themselves and are left as they are.
local shared = {[lighty] = true, [c] = true, [r.resp_body] = true, [r.req_body] = true,
                [server] = true, [server.plugin_stats] = true, [server.stats] = true}
for _, proxied in pairs(r) do shared[proxied] = true end
local real_of, view_of = {}, {}
local viewed
-- A shallow view (lighty.r, whose values are proxies that guard themselves) reads
-- straight from its table, without a call.
local function view(real, shallow)
    local shown = {}
    real_of[shown], view_of[real] = real, shown
    return setmetatable(shown, {
        __index = shallow and real or function(_, key) return viewed(real[key]) end,
        __newindex = function(_, key, value)
            stateful = true
            real[key] = value
        end,
        __pairs = function()
            return function(_, key)
                local k, value = next(real, key)
                return k, viewed(value)
            end, shown, nil
        end,
        __len = function() return #real end,
    })
end
viewed = function(value)
    if type(value) ~= "table" or shared[value] or real_of[value] then return value end
    return view_of[value] or view(value)
end
local globals = view(_G)
rawset(lighty, "r", view(r, true))

local function unviewed(t)
    if shared[t] or real_of[t] then stateful = true end
    return real_of[t] or t
end
local function seen_as(t, value)
    if real_of[t] then return viewed(value) end
    return value
end
_G.setmetatable = function(t, meta)
    setmetatable(unviewed(t), meta)
    return t
end
_G.getmetatable = function(value)
    if type(value) ~= "table" then stateful = true end   -- the string metatable
    return getmetatable(unviewed(value))
end
_G.rawset = function(t, key, value)
    rawset(unviewed(t), key, value)
    return t
end
_G.rawget = function(t, key) return seen_as(t, rawget(real_of[t] or t, key)) end
_G.rawlen = function(t) return rawlen(real_of[t] or t) end
_G.next = function(t, key)
    local k, value = next(real_of[t] or t, key)
    return k, seen_as(t, value)
end
_G.load = function(chunk, name, mode, ...)
    if select("#", ...) == 0 then return load(chunk, name, mode, globals) end
    return load(chunk, name, mode, ...)
end

local function clear(t)
    for key in next, t do rawset(t, key, nil) end
end

-- A file part of lighty.content: its `length` is where the range ends, as lighttpd
-- reads it there (resp_body's is a length); false for a part that ends the list.
local function add_legacy_file(i, part)
    if type(part.filename) ~= "string" then
        B.print_error("content[" .. i .. "] is a table and field \"filename\" must be a string")
        return false
    end
    local offset = part.offset == nil and 0 or tointeger(part.offset) or 0
    local last = part.length == nil and -1 or tointeger(part.length) or -1
    if offset < 0 then
        B.print_error("offset for '" .. part.filename .. "' is negative")
        return false
    end
    if last >= offset then
        last = last - offset
    elseif last ~= -1 then
        B.print_error("offset > length for '" .. part.filename .. "'")
        return false
    end
    if last == 0 then return true end
    local err = B.body_add_file(part.filename, offset, last)
    if err then B.print_error(err) end
    return not err
end

-- lighty.content's parts, up to the first that is neither a string nor a table.
local function add_legacy_parts(parts)
    for i = 1, rawlen(parts) do
        local part = rawget(parts, i)
        local kind = type(part)
        if kind == "string" or kind == "number" then
            B.body_add(tostring(part))
        elseif kind ~= "table" then
            if part ~= nil then
                B.print_error("content[" .. i .. "] is neither a string nor a table")
            end
            return
        elseif not add_legacy_file(i, part) then
            return
        end
    end
end

-- The older interface: lighty.header's pairs become response headers, and
-- lighty.content the body of an answer (a status of 200 or more).
local function copy_legacy(code)
    if type(result.header) == "table" then
        for name, value in pairs(result.header) do
            store_header(nil, name, value)
        end
    end
    if code >= 200 and type(result.content) == "table" then
        B.body_clear()
        add_legacy_parts(result.content)
    end
end

-- The status a script's return value stands for (none: 0).
local function status_of(ret)
    if ret == nil then return 0 end
    local code = tointeger(tonumber(ret))
    if code == nil then
        B.print_error("lua_pcall(): unexpected non-integer return type: " .. type(ret))
        return 0
    end
    return code
end

local function finish(ret)
    local code = status_of(ret)
    copy_legacy(code)
    return code
end

local function run(fn, env)
    env.lighty = lighty
    budget = LIMIT
    impure = false
    nwritten = 0
    sethook(hook, "", EVERY)
    local ok, ret = xpcall(fn, traceback)
    sethook()
    -- The older interface's tables may run the script's code (their metamethods), so
    -- finishing with them is under the budget too; without them nothing of the
    -- script's runs, and no hook traces it (a traced instruction costs many untraced).
    if ok and next(result) == nil then
        ret = status_of(ret)
    elseif ok then
        sethook(hook, "", EVERY)
        ok, ret = xpcall(finish, traceback, ret)
        sethook()
    end
    clear(env)
    clear(result)
    if not ok then
        return type(ret) == "string" and ret or tostring(ret), unpack(written, 1, nwritten)
    end
    return 2 * ret + ((impure or stateful) and 0 or 1), unpack(written, 1, nwritten)
end

local function compile(source, name)
    local env = setmetatable({}, {__index = globals})
    shared[env] = true
    local fn, err = load(source, name, "t", env)
    if not fn then return nil, err end
    return function() return run(fn, env) end, nil
end

return compile
