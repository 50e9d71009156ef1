-- A stand-in for FXServer, just big enough to run the sonoran_dispatcher resource with
-- plain Lua 5.4, so CI can test the real resource files against a real dispatcher.
--
--   lua5.4 fivem_harness.lua RESOURCE_DIR
--
-- Environment (set by tests/integrations/fivem_support.py):
--   FIVEM_CONVAR_<name>       the value GetConvar(<name>) returns
--   HARNESS_PYTHON            interpreter that runs fivem_http.py (the HTTP client)
--   HARNESS_CALLS             JSON array of call911 argument lists:
--                             [[caller, location, description, postal, plate,
--                               coords, customMeta], ...] (the last two optional)
--   HARNESS_EXPORT            the export the calls go to (default call911; or call911Ex)
--   HARNESS_COMMANDS          JSON array of [source, command, [args...]] to run
--   HARNESS_EVENTS            JSON array of [event, arg1, ...] to trigger (server events)
--   HARNESS_REMOVE            JSON array of ids to removeCall(id, cb) (after the calls);
--                             one "REMOVED {json}" line per callback
--   HARNESS_KVP_FILE          the file behind SetResourceKvp/GetResourceKvpString
--   HARNESS_AWAIT_DRAIN       "1": also wait until the export pendingCalls() is 0
--   HARNESS_AWAIT_EVENT       also wait until this event was raised HARNESS_AWAIT_COUNT times
--   HARNESS_AWAIT_IDLE        "1": also run until no timer is left
--   HARNESS_CLIENTS           JSON array of player ids that connect (each runs the
--                             manifest's client scripts in its own sandbox)
--   HARNESS_CLIENT_CONVARS    JSON object: the convars clients can read (`setr` ones)
--   HARNESS_LOSE_RESPONSES    lose the answers of the first N requests (default 0): the
--                             request is made, but the resource sees FiveM's timeout
--   HARNESS_TIMEOUT_MS        give up after this much (virtual) time (default 60000)
--
-- Output: the resource's own log lines, "HARNESS ..." trace lines, one
-- "RESULT {json}" line per callback ({"index", "argc", "args": [...]}, every argument
-- the callback got, in order), then exit 0 once every callback fired.
--
-- Time is virtual but kept in step with the wall clock: when only timers are left,
-- the loop sleeps until the next one is due. So a test can restart the dispatcher
-- while the resource is backing off, and the retries happen in real time.

local resourceDir = assert(arg[1], 'usage: lua5.4 fivem_harness.lua RESOURCE_DIR')
local harnessDir = arg[0]:match('^(.*)/[^/]*$') or '.'

-- FiveM's global `json` is David Kolf's dkjson; Debian ships the same module.
local okJson, dkjson = pcall(require, 'dkjson')
if not okJson then
    io.stderr:write('the harness needs dkjson: apt-get install -y lua-dkjson\n')
    os.exit(4)
end
json = dkjson

local function trace(fmt, ...)
    io.stdout:write(('HARNESS ' .. fmt):format(...) .. '\n')
    io.stdout:flush()
end

-- Buffered stdout would hide progress from the test, which reacts to log lines.
local realPrint = print
print = function(...)
    realPrint(...)
    io.stdout:flush()
end

---------------------------------------------------------------------------------------
-- Scheduler: SetTimeout, Citizen.CreateThread, Citizen.Wait, GetGameTimer
---------------------------------------------------------------------------------------

local now = 0          -- virtual milliseconds since start
local timers = {}      -- { at, seq, fn }
local seq = 0
local failed = false   -- a script error happened (FiveM prints it and carries on)

local function schedule(ms, fn)
    seq = seq + 1
    timers[#timers + 1] = { at = now + math.max(0, ms or 0), seq = seq, fn = fn }
end

local function sleep(ms)
    if ms > 0 then
        os.execute(('sleep %.3f'):format(ms / 1000))
    end
end

local function protect(fn, ...)
    local ok, err = xpcall(fn, debug.traceback, ...)
    if not ok then
        failed = true
        realPrint('SCRIPT ERROR: ' .. tostring(err))
    end
end

local function resume(co)
    local ok, waitMs = coroutine.resume(co)
    if not ok then
        failed = true
        realPrint('SCRIPT ERROR: ' .. debug.traceback(co, tostring(waitMs)))
    elseif coroutine.status(co) == 'suspended' then
        schedule(waitMs, function() resume(co) end)
    end
end

Citizen = {}

function Citizen.SetTimeout(ms, fn)
    schedule(ms, function() protect(fn) end)
end

function Citizen.CreateThread(fn)
    local co = coroutine.create(fn)
    schedule(0, function() resume(co) end)
end

function Citizen.Wait(ms)
    assert(coroutine.isyieldable(), 'Citizen.Wait outside a thread')
    coroutine.yield(ms)
end

Citizen.Trace = function(text) io.stdout:write(text) end
SetTimeout, CreateThread, Wait = Citizen.SetTimeout, Citizen.CreateThread, Citizen.Wait

function GetGameTimer()
    return now
end

-- Run the earliest timer (ties in the order they were set); false when none is left.
local function step()
    if #timers == 0 then
        return false
    end
    table.sort(timers, function(a, b)
        if a.at ~= b.at then return a.at < b.at end
        return a.seq < b.seq
    end)
    local timer = table.remove(timers, 1)
    if timer.at > now then
        sleep(timer.at - now)
        now = timer.at
    end
    timer.fn()
    return true
end

---------------------------------------------------------------------------------------
-- Server natives
---------------------------------------------------------------------------------------

local RESOURCE = resourceDir:gsub('/+$', ''):match('([^/]+)$')

function GetCurrentResourceName()
    return RESOURCE
end

function IsDuplicityVersion()
    return true
end

-- FiveM's GetConvar always returns a string; so does this one.
function GetConvar(name, default)
    local value = os.getenv('FIVEM_CONVAR_' .. name)
    if value == nil then
        return default
    end
    return value
end

-- Events and commands: recorded, so the harness can trigger them as FXServer would.
local handlers = {}   -- event name -> { fn, ... }
local commands = {}   -- command name -> fn(source, args, rawCommand)
local onEvent         -- set below: the harness's own watcher of raised events

function AddEventHandler(name, fn)
    handlers[name] = handlers[name] or {}
    table.insert(handlers[name], fn)
end

-- Only events registered with RegisterNetEvent may come from a client (FXServer drops
-- the others with a warning); the harness does the same.
local netEvents = {}

function RegisterNetEvent(name)
    netEvents[name] = true
end
RegisterServerEvent = RegisterNetEvent

function TriggerEvent(name, ...)
    if onEvent then
        onEvent(name, ...)
    end
    for _, fn in ipairs(handlers[name] or {}) do
        protect(fn, ...)
    end
end

function RegisterCommand(name, fn)
    commands[name] = fn
end

-- Resource KVP, kept in a JSON file (HARNESS_KVP_FILE) so a second harness run with
-- the same file is the same resource after a restart.
local kvpFile = os.getenv('HARNESS_KVP_FILE')

local function kvpRead()
    local fh = kvpFile and io.open(kvpFile, 'r')
    if not fh then
        return {}
    end
    local text = fh:read('a')
    fh:close()
    return json.decode(text) or {}
end

function SetResourceKvp(key, value)
    local all = kvpRead()
    all[key] = value
    if kvpFile then
        local fh = assert(io.open(kvpFile, 'w'))
        fh:write(json.encode(all))
        fh:close()
    end
end

function GetResourceKvpString(key)
    return kvpRead()[key]
end

-- Players: source 7 is "Jane Player" at a fixed spot (OneSync's server-side coords).
function GetPlayerName(source)
    return tonumber(source) == 7 and 'Jane Player' or nil
end

function GetPlayerPed(source)
    return tonumber(source) == 7 and 700 or 0
end

function GetEntityCoords(ped)
    if ped == 700 then
        return { x = 215.5, y = -810.25, z = 30.75 }
    end
    return { x = 0.0, y = 0.0, z = 0.0 }
end

-- exports('name', fn) records; exports['resource']:name(...) calls, as in FiveM (the
-- colon passes the proxy as self, which FiveM drops).
local exported = {}
exports = setmetatable({}, {
    __call = function(_, name, fn)
        exported[name] = fn
    end,
    __index = function(_, resource)
        return setmetatable({}, {
            __index = function(_, name)
                local fn = resource == RESOURCE and exported[name]
                assert(fn, ('No such export %s in resource %s'):format(name, resource))
                return function(_, ...) return fn(...) end
            end,
        })
    end,
})

---------------------------------------------------------------------------------------
-- PerformHttpRequest: a real request, answered the way FXServer answers
---------------------------------------------------------------------------------------

dofile(harnessDir .. '/fivem_harness_http.lua')({
    harnessDir = harnessDir, schedule = schedule, protect = protect, trace = trace,
})

---------------------------------------------------------------------------------------
-- Load the resource the way FXServer does: its manifest names the server scripts
---------------------------------------------------------------------------------------

local manifest = { scripts = {}, clientScripts = {} }

local function loadManifest(path)
    local env = setmetatable({}, {
        __index = function(_, directive)
            return function(value)
                manifest[directive] = value
                if directive == 'server_script' or directive == 'shared_script' then
                    manifest.scripts[#manifest.scripts + 1] = value
                elseif directive == 'server_scripts' or directive == 'shared_scripts' then
                    for _, file in ipairs(value) do
                        manifest.scripts[#manifest.scripts + 1] = file
                    end
                end
                if directive == 'client_script' or directive == 'shared_script' then
                    manifest.clientScripts[#manifest.clientScripts + 1] = value
                elseif directive == 'client_scripts' or directive == 'shared_scripts' then
                    for _, file in ipairs(value) do
                        manifest.clientScripts[#manifest.clientScripts + 1] = file
                    end
                end
                -- Directives chain: `author 'x' description 'y'` is legal Lua.
                return function() end
            end
        end,
    })
    local chunk = assert(loadfile(path, 't', env))
    chunk()
end

loadManifest(resourceDir .. '/fxmanifest.lua')
trace('manifest fx_version=%s game=%s scripts=%s', tostring(manifest.fx_version),
    tostring(manifest.game), table.concat(manifest.scripts, ','))
for _, file in ipairs(manifest.scripts) do
    local chunk = assert(loadfile(resourceDir .. '/' .. file))
    protect(chunk)
end
if failed then
    os.exit(5)
end

---------------------------------------------------------------------------------------
-- Connected players: each runs the manifest's client scripts in a sandbox of its own
---------------------------------------------------------------------------------------

dofile(harnessDir .. '/fivem_harness_clients.lua')({
    resourceDir = resourceDir, manifest = manifest, handlers = handlers, netEvents = netEvents,
    schedule = schedule, protect = protect, trace = trace, now = function() return now end,
})

---------------------------------------------------------------------------------------
-- Make the calls and wait for every callback
---------------------------------------------------------------------------------------

local calls = json.decode(os.getenv('HARNESS_CALLS') or '[]')
local timeoutMs = tonumber(os.getenv('HARNESS_TIMEOUT_MS') or '60000')
local pending = #calls

local exportName = os.getenv('HARNESS_EXPORT') or 'call911'
local awaitEvent = os.getenv('HARNESS_AWAIT_EVENT')
pending = pending + tonumber(os.getenv('HARNESS_AWAIT_COUNT') or '0')

-- Every event raised is printed: "EVENT {"name", "args"}".
onEvent = function(name, ...)
    local got = {}
    for n = 1, select('#', ...) do
        local value = select(n, ...)
        if value == nil then value = '<nil>' end
        got[n] = value
    end
    print('EVENT ' .. json.encode({ name = name, args = got }))
    if name == awaitEvent then
        pending = pending - 1
    end
end

for _, id in ipairs(json.decode(os.getenv('HARNESS_REMOVE') or '[]')) do
    pending = pending + 1
    CreateThread(function()
        exports[RESOURCE]:removeCall(id, function(text, ok)
            print('REMOVED ' .. json.encode({ id = id, text = text, ok = ok }))
            pending = pending - 1
        end)
    end)
end

if os.getenv('HARNESS_AWAIT_DRAIN') == '1' then
    pending = pending + 1
    CreateThread(function()
        Wait(50)
        while exports[RESOURCE]:pendingCalls() > 0 do
            Wait(100)
        end
        print('HARNESS drained')
        pending = pending - 1
    end)
end

for _, run in ipairs(json.decode(os.getenv('HARNESS_COMMANDS') or '[]')) do
    CreateThread(function()
        local fn = assert(commands[run[2]], 'no command ' .. tostring(run[2]))
        fn(run[1], run[3], '/' .. run[2] .. ' ' .. table.concat(run[3], ' '))
    end)
end

for _, event in ipairs(json.decode(os.getenv('HARNESS_EVENTS') or '[]')) do
    CreateThread(function()
        TriggerEvent(table.unpack(event))
    end)
end

for i, args in ipairs(calls) do
    -- Straight after start-up, as a script that calls the export from its own thread.
    CreateThread(function()
        local export = exports[RESOURCE][exportName]
        export(nil, args[1], args[2], args[3], args[4], args[5], function(...)
            local argc = select('#', ...)
            local got = {}
            for n = 1, argc do
                local value = select(n, ...)
                -- JSON has no nil inside an array: write it as the string "<nil>".
                if value == nil then value = '<nil>' end
                got[n] = value
            end
            print('RESULT ' .. json.encode({ index = i, argc = argc, args = got }))
            pending = pending - 1
        end, args[6], args[7])
    end)
end

-- HARNESS_AWAIT_IDLE: also run until no timer is left (e.g. a follow that gives up).
local untilIdle = os.getenv('HARNESS_AWAIT_IDLE') == '1'
while (pending > 0 or untilIdle) and now <= timeoutMs do
    if not step() then
        break
    end
end

if failed then
    os.exit(5)
end
if pending > 0 then
    print(('HARNESS TIMEOUT %d callback(s) never fired'):format(pending))
    os.exit(3)
end
os.exit(0)
