-- Connected players for fivem_harness.lua: each runs the resource's client scripts in a
-- sandbox of its own, with client natives only.
--
--   dofile('fivem_harness_clients.lua')({ resourceDir, manifest, handlers, netEvents,
--                                         schedule, protect, trace, now })
--
-- HARNESS_CLIENTS names the players (ids) that connect; HARNESS_CLIENT_CONVARS the
-- convars they can read.

return function(h)
local manifest, handlers, netEvents = h.manifest, h.handlers, h.netEvents
local schedule, protect, trace = h.schedule, h.protect, h.trace
local resourceDir = h.resourceDir

-- A client sees only replicated convars (`setr`), given as HARNESS_CLIENT_CONVARS, and
-- client natives: a server native in a client script is an error, as in the game.
-- TriggerServerEvent reaches the server's handlers of a net event with `source` set to
-- the player's id, and is printed: "NET {"source", "name", "args"}".
local clientConvars = json.decode(os.getenv('HARNESS_CLIENT_CONVARS') or '{}')
local ACTIVE_AFTER_MS = 1000  -- joining takes a while: the player is active after this

local function startClient(playerId)
    local joinedAt = h.now()
    local env = {
        string = string, table = table, math = math, pairs = pairs, ipairs = ipairs,
        tostring = tostring, tonumber = tonumber, type = type, pcall = pcall,
        select = select, next = next, error = error, assert = assert, print = print,
        json = json, Citizen = Citizen, CreateThread = CreateThread, Wait = Wait,
        SetTimeout = SetTimeout, GetGameTimer = GetGameTimer,
        AddEventHandler = function() end, RegisterNetEvent = function() end,
        PlayerId = function() return 0 end,
        NetworkIsPlayerActive = function(id) return id == 0 and h.now() - joinedAt >= ACTIVE_AFTER_MS end,
        GetConvar = function(name, default)
            local value = clientConvars[name]
            if value == nil then return default end
            return value
        end,
    }
    env.TriggerServerEvent = function(name, ...)
        print('NET ' .. json.encode({ source = playerId, name = name, args = { ... } }))
        local args = table.pack(...)
        schedule(0, function()
            if not netEvents[name] then
                trace('dropped net event %s from %d: not registered with RegisterNetEvent', name, playerId)
                return
            end
            for _, fn in ipairs(handlers[name] or {}) do
                source = playerId
                protect(fn, table.unpack(args, 1, args.n))
                source = nil
            end
        end)
    end
    for _, file in ipairs(manifest.clientScripts) do
        local chunk = assert(loadfile(resourceDir .. '/' .. file, 't', env))
        protect(chunk)
    end
end

for _, playerId in ipairs(json.decode(os.getenv('HARNESS_CLIENTS') or '[]')) do
    startClient(playerId)
end
end
