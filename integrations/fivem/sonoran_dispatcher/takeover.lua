-- Takeover mode (opt-in: `set sonoran_dispatcher_takeover "true"`): this resource
-- stands in for the official sonorancad callcommands plugin, so its /911 and /311
-- commands and the scripts that trigger its events go through the dispatcher.
--
-- What the plugin does, and so what this does: the commands build a call from the
-- player's words and trigger `SonoranCAD::callcommands:SendCallApi`; that event raises
-- `SonoranCAD::callcommands:cadIncomingCall` (for other resources), sends the call with
-- the plugin's metaData (callerPlayerId, uuid, silentAlert, useCallLocation, postal,
-- x/y/z) and deleteAfterMinutes = 30, and raises `...:EmergencyCallAdd` with the CAD's
-- call id (at once when the CAD answered within the wait, else once follow.lua learns
-- it). Switch the plugin off (README) or every call is sent twice.

if GetConvar('sonoran_dispatcher_takeover', 'false') ~= 'true' then
    return
end

local PREFIX = 'SonoranCAD::callcommands:'

local function uuid()
    return (('xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'):gsub('[xy]', function(c)
        local v = c == 'x' and math.random(0, 15) or math.random(8, 11)
        return ('%x'):format(v)
    end))
end

-- The player's position, when the server knows it (OneSync); nil otherwise.
local function position(source)
    local ok, coords = pcall(function()
        return GetEntityCoords(GetPlayerPed(source))
    end)
    if ok and coords ~= nil and coords.x ~= nil then
        return coords
    end
    return nil
end

local function sendCallApi(emergency, caller, location, description, source, silenceAlert, useCallLocation, kind)
    -- Resolved before cadIncomingCall, as the plugin does (it has a street from its
    -- location cache; this resource has none).
    if location == nil or location == '' then
        location = 'Unknown'
    end
    local id = uuid()
    TriggerEvent(PREFIX .. 'cadIncomingCall', emergency, caller, location, description, source, id, kind)
    local where = position(source)
    local metaData = {
        callerPlayerId = tostring(source),
        uuid = id,
        silentAlert = tostring(silenceAlert == true),
        useCallLocation = tostring(useCallLocation == true),
    }
    if where ~= nil then
        metaData.x, metaData.y, metaData.z = tostring(where.x), tostring(where.y), tostring(where.z)
    end
    local call = {
        serverId = DispatcherConfig.read().serverId,
        isEmergency = emergency ~= false,
        caller = caller,
        location = location,
        description = description,
        deleteAfterMinutes = 30,
        metaData = metaData,
    }
    DispatcherSend(call, function(ok, callId, text, key)
        -- The plugin raises EmergencyCallAdd with the CAD's id: an ADDED answer has it; a
        -- QUEUED one has our ticket, so the call is followed until the CAD has it.
        if not ok then
            return
        end
        if text:find('^EMERGENCY CALL ADDED') then
            TriggerEvent(PREFIX .. 'EmergencyCallAdd', source, math.tointeger(tonumber(callId)) or callId)
        else
            DispatcherFollow(key, callId, call, function(cadId)
                TriggerEvent(PREFIX .. 'EmergencyCallAdd', source, cadId)
            end)
        end
    end)
end

RegisterNetEvent(PREFIX .. 'SendCallApi')
AddEventHandler(PREFIX .. 'SendCallApi', sendCallApi)

-- /911 and /311: the words after the command are the description.
local function command(name, emergency)
    RegisterCommand(name, function(source, args)
        if args[1] == nil then
            return
        end
        local caller = GetPlayerName(source) or ('Player ' .. tostring(source))
        sendCallApi(emergency, caller, '', table.concat(args, ' '), source, false, false, name)
    end, false)
end

command(GetConvar('sonoran_dispatcher_911_command', '911'), true)
command(GetConvar('sonoran_dispatcher_311_command', '311'), false)
