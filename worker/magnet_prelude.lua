-- The `lighty` table of mod_magnet (lighttpd 1.4.69's Lua API), built once per
-- script state over the Python bridge `B` (worker/magnet_runtime.py), and the runner
-- that calls a script under an instruction budget.
--
-- Arguments: B (the bridge's functions), C (the lighty.c functions), the instruction
-- budget of one run, and how many instructions pass between two budget checks.
-- Returns: compile(source, name) -> function, env | nil, message; run(fn, env) ->
-- true, status | false, message.
local B, C, LIMIT, EVERY = ...

local error, pairs, ipairs, next, type, select, setmetatable, tostring, tonumber, load, rawset =
    error, pairs, ipairs, next, type, select, setmetatable, tostring, tonumber, load, rawset
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

-- Past the budget every instruction of the script fails, so a pcall cannot swallow
-- the error; this file's own functions (the runner, the proxies) still finish.
local OWN_SOURCE = getinfo(1, "S").source
local budget, hook = 0, nil
hook = function()
    if budget < 0 then
        if getinfo(2, "S").source == OWN_SOURCE then return end
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
-- returns (nil, message) for what lighttpd refuses with a Lua error.
local function proxy(get, set, list)
    local meta = {
        __index = function(_, key)
            local value, err = get(key)
            if err then error(err, 2) end
            return value
        end,
        __newindex = function(_, key, value)
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
local resp_body_values = { bytes_in = B.resp_body_length, bytes_out = function() return 0 end }
-- The request body is never collected here (lighttpd 1.4.69 collects it with
-- `collect` and restarts the request): `get` is nil and `collect` false.
local req_body_values = {
    len = B.reqbody_len,
    get = function() return nil end,
    collect = function() return false end,
    add = function() return nil end,
    set = function() return nil end,
    bytes_in = function() return 0 end,
    bytes_out = function() return 0 end,
}

local r = {
    req_header = proxy(B.header_get, B.header_set, B.header_list),
    req_attr = proxy(B.attr_get, B.attr_set, B.attr_list),
    req_env = proxy(B.env_get, B.env_set, B.env_list),
    req_item = proxy(B.item_get, B.item_set, nil),
    resp_header = proxy(B.resp_header_get, B.resp_header_set, B.resp_header_list),
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

local c = {}
for name, fn in pairs(C) do c[name] = fn end
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

local globals = _G
local function compile(source, name)
    local env = setmetatable({}, {__index = globals})
    local fn, err = load(source, name, "t", env)
    if not fn then return nil, err end
    return fn, env
end

local function clear(t)
    for key in next, t do rawset(t, key, nil) end
end

-- The older interface: lighty.header's pairs become response headers, and
-- lighty.content the body of an answer (a status of 200 or more).
local function copy_legacy(code)
    if type(result.header) == "table" then
        for name, value in pairs(result.header) do
            B.resp_header_set(name, value)
        end
    end
    if code >= 200 and type(result.content) == "table" then
        add_parts(result.content)
    end
end

local function finish(ret)
    if ret == nil then
        copy_legacy(0)
        return 0
    end
    local code = tointeger(tonumber(ret))
    if code == nil then
        B.print_error("lua_pcall(): unexpected non-integer return type: " .. type(ret))
        return 0
    end
    copy_legacy(code)
    return code
end

local function run(fn, env)
    env.lighty = lighty
    budget = LIMIT
    sethook(hook, "", EVERY)
    local ok, ret = xpcall(fn, traceback)
    if ok then ok, ret = xpcall(finish, traceback, ret) end
    sethook()
    clear(env)
    clear(result)
    return ok, ret
end

return compile, run
