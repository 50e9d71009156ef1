-- sonoran_dispatcher: in-game 911 calls to sonoran-dispatcher instead of straight to the CAD.
--
-- The dispatcher's `web` process takes the CAD's own request body on the CAD's own path
-- (POST /emergency/call_911) and records each call in Redis before it answers; from
-- there the dispatcher retries the CAD for as long as it takes. What is left for this
-- resource is the one hop it owns: the game server -> dispatcher request. If that hop
-- fails (dispatcher restarting, Redis briefly gone) the call waits here, in resource
-- KVP so a restart does not lose it, and is sent again, oldest first, with the same Idempotency-Key header, so the dispatcher
-- records it once however many times it arrives.
--
-- Exports:
--   call911(caller, location, description, postal, plate, cb, coords, customMeta)
--       cb(text, ok): the official sonorancad resource's callback. text is the CAD's
--       own "EMERGENCY CALL ADDED ID: 12345" when the CAD took the call within
--       sonoran_dispatcher_wait seconds (the door's Prefer: wait), else the dispatcher's
--       "EMERGENCY CALL QUEUED ID: <id>" (the call is safe and will be delivered), or
--       the refusal ("INVALID API KEY", "RETRY QUEUE FULL"); ok is false only then.
--   call911Ex(caller, location, description, postal, plate, cb, coords, customMeta)
--       cb(ok, id, text): the same call, for new scripts; id is the token after "ID: "
--       (the CAD's id, or the dispatcher's when the call is only queued).
-- cb is called exactly once per call; while the dispatcher is unreachable that is later,
-- when a retry gets through. See README.md.

local RESOURCE = GetCurrentResourceName()
local CALL_PATH = '/emergency/call_911'
local REMOVE_PATH = '/emergency/remove_911'

-- Answers worth trying again: no answer at all (0), and the statuses that mean "not
-- now" rather than "not this": the dispatcher says 503 when Redis is unreachable or it
-- is not configured yet; 502/504 come from a reverse proxy whose dispatcher is down.
local RETRYABLE = { [0] = true, [408] = true, [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }

-- Calls not yet accepted by the dispatcher, oldest first. Up to inFlight of them are
-- on their way at once (sent in queue order), so one call whose door waits for the CAD
-- (Prefer: wait) does not hold the calls behind it. When an attempt gets no usable
-- answer, sending pauses for a backoff; then only the oldest call goes until one gets
-- through, so after an outage the calls are taken oldest first.
local queue = {}
local sending = 0      -- attempts in flight
local paused = false   -- a retry timer is armed: send nothing until it fires
local probing = false  -- after a backoff only the oldest call goes, until one gets through
local failures = 0     -- consecutive backoffs (drives the delay)
local made = 0         -- calls made since the resource started (part of the keys)

local function log(fmt, ...)
    print(('[%s] ' .. fmt):format(RESOURCE, ...))
end

-- Once per call, never per attempt: this key is what lets a retry after a lost answer
-- come back with the first attempt's id instead of a second call. Time + counter keep
-- keys from one server apart; the random part keeps two servers (or a restart within
-- the same second) apart. Lua 5.4 seeds math.random itself.
local function newIdempotencyKey(serverId)
    made = made + 1
    return ('fivem-%s-%s-%x-%d-%06x%06x'):format(RESOURCE, serverId, os.time(), made,
        math.random(0, 0xFFFFFF), math.random(0, 0xFFFFFF))
end

-- The CAD wants postals and plates as strings ("350", "7015a"); scripts pass numbers
-- too, and a float from json.decode would print as "350.0".
local function asText(value)
    if value == nil or value == '' then
        return nil
    end
    if type(value) == 'number' then
        value = math.tointeger(value) or value
    end
    return tostring(value)
end

-- The seed's call object, with the official call911's two extras as it maps them today:
-- coords (a table with x and y) goes on the call as it is, and the keys of customMeta
-- are merged into metaData (a custom key wins over postal/plate, as there).
local function buildCall(caller, location, description, postal, plate, serverId, coords, customMeta)
    local call = {
        serverId = serverId,
        isEmergency = true,
        caller = caller,
        location = location,
        description = description,
    }
    if type(coords) == 'table' and coords.x and coords.y then
        call.coords = coords
    end
    local metaData = { postal = asText(postal), plate = asText(plate) }
    if type(customMeta) == 'table' then
        for name, value in pairs(customMeta) do
            metaData[name] = value
        end
    end
    -- FiveM's json.encode writes an empty table as [], which is not an object; leave
    -- metaData out instead when there is nothing in it (the dispatcher treats it as {}).
    if next(metaData) ~= nil then
        call.metaData = metaData
    end
    return call
end

-- On an HTTP error FiveM passes no body, but puts "HTTP <status>: <body>" in errorData.
local function answerText(body, errorData)
    if type(body) == 'string' and body ~= '' then
        return body
    end
    if type(errorData) == 'string' then
        return (errorData:gsub('^HTTP %d+:%s*', ''))
    end
    return ''
end

-- Outside callers reach us through exports, so cb may be a function reference (a
-- callable table), not a function: call it, don't type-check it. A broken callback
-- must not stall the queue behind it.
local function finish(entry, ok, id, text)
    if entry.cb == nil then
        return
    end
    local fine, err
    if entry.rich then
        fine, err = pcall(entry.cb, ok, id, text)
    else
        fine, err = pcall(entry.cb, text, ok)
    end
    if not fine then
        log('^1the call911 callback failed: %s^7', tostring(err))
    end
end

local drain

-- Jitter spreads the retries of many game servers that lost the same dispatcher; it
-- only shortens a delay, so retry_max_ms stays a true maximum.
local function retryDelayMs(cfg)
    local delay = math.min(cfg.retryMaxMs, cfg.retryMinMs * 2 ^ (failures - 1))
    return math.floor(delay * (0.8 + 0.2 * math.random()))
end

-- The queue in resource KVP (FXServer keeps it on disk), so a resource or server
-- restart does not lose the calls the dispatcher has not taken yet. Only the call and
-- its key are kept: a callback cannot outlive the script that passed it.
local KVP_QUEUE = 'queue'

local function persist()
    local kept = {}
    for i, entry in ipairs(queue) do
        kept[i] = { key = entry.key, call = entry.call }
    end
    SetResourceKvp(KVP_QUEUE, json.encode(kept))
end

local function forget(entry)
    for i, queued in ipairs(queue) do
        if queued == entry then
            table.remove(queue, i)
            persist()
            return
        end
    end
end

-- The id in "EMERGENCY CALL ADDED ID: 12345" or "EMERGENCY CALL QUEUED ID: <id>": the
-- token after "ID: ", whatever its alphabet (a CAD id, a ULID, a numeric ticket).
local function answerId(text)
    return text:match('ID:%s*([^%s,]+)')
end

local function onAnswer(entry, cfg, status, text)
    sending = sending - 1
    entry.sending = false
    if RETRYABLE[status] then
        local why = (status == 0 and 'dispatcher unreachable: ' or ('HTTP %d: '):format(status)) .. text:sub(1, 200)
        if not paused then
            paused = true
            failures = failures + 1
            local delay = retryDelayMs(cfg)
            log('call %s not accepted (%s); retry in %.1f s, %d call(s) waiting', entry.key,
                why, delay / 1000, #queue)
            SetTimeout(delay, function()
                paused = false
                probing = true
                drain()
            end)
        else
            log('call %s not accepted (%s); %d call(s) waiting', entry.key, why, #queue)
        end
        return
    end

    forget(entry)
    failures = 0
    probing = false
    local id = status >= 200 and status < 300 and answerId(text)
    if id then
        if entry.attempts > 1 then
            log('call %s accepted as %s after %d attempts', entry.key, id, entry.attempts)
        else
            log('call %s accepted as %s', entry.key, id)
        end
        finish(entry, true, id, text)
    else
        local err = text ~= '' and text or ('HTTP ' .. tostring(status))
        log('^1call %s refused: %s^7', entry.key, err:sub(1, 200))
        finish(entry, false, nil, err)
    end
    drain()
end

-- One create request for a call, with its Idempotency-Key (the door then records the
-- call once however often it comes) and Prefer: wait=N when N > 0. handler(status,
-- text) gets FiveM's status (0: no answer) and the answer's text. follow.lua uses it too:
-- the same key asked again is answered with the first call's outcome.
DispatcherPost = function(cfg, call, key, waitSeconds, handler)
    local payload = json.encode({
        id = cfg.communityId,
        key = cfg.apiKey,
        type = 'CALL_911',
        data = { call },
    })
    local headers = { ['Content-Type'] = 'application/json', ['Idempotency-Key'] = key }
    if waitSeconds > 0 then
        headers['Prefer'] = ('wait=%d'):format(waitSeconds)
    end
    PerformHttpRequest(cfg.url .. CALL_PATH, function(status, body, _headers, errorData)
        handler(tonumber(status) or 0, answerText(body, errorData))
    end, 'POST', payload, headers)
end

local function send(entry, cfg)
    sending = sending + 1
    entry.sending = true
    entry.attempts = entry.attempts + 1
    DispatcherPost(cfg, entry.call, entry.key, cfg.waitSeconds, function(status, text)
        onAnswer(entry, cfg, status, text)
    end)
end

-- Send the oldest calls not yet on their way, up to inFlight at once.
drain = function()
    if paused then
        return
    end
    local cfg = DispatcherConfig.read()
    local limit = probing and 1 or cfg.inFlight
    for _, entry in ipairs(queue) do
        if sending >= limit then
            return
        end
        if not entry.sending then
            send(entry, cfg)
        end
    end
end

-- The seed's signature. postal and plate may be nil; cb is optional. rich picks the
-- callback's shape (see the exports below). Returns the call's idempotency key.
local function enqueue(rich, call, cb)
    local cfg = DispatcherConfig.read()
    local entry = {
        call = call,
        key = newIdempotencyKey(cfg.serverId),
        cb = cb,
        rich = rich,
        attempts = 0,
        sending = false,
    }
    -- A value JSON cannot hold (a function, a userdata) would make json.encode throw
    -- later, inside send, and stall every call behind this one: refuse it here.
    local encodable, err = pcall(json.encode, entry.call)
    if not encodable then
        log('^1call %s refused: %s^7', entry.key, tostring(err))
        finish(entry, false, nil, 'INVALID CALL: ' .. tostring(err))
        return entry.key
    end
    -- Full means the dispatcher has been away for a long while. Refusing the newest
    -- call keeps every promise made so far and tells this caller now, so the script can
    -- tell the player; dropping an older call would lose it without anyone knowing.
    if #queue >= cfg.queueSize then
        log('^1call %s refused: retry queue full (%d calls waiting for the dispatcher)^7',
            entry.key, #queue)
        finish(entry, false, nil, 'RETRY QUEUE FULL')
        return entry.key
    end
    queue[#queue + 1] = entry
    persist()
    drain()
    return entry.key
end

-- The official call911's optional arguments, in its order: coords, customMeta.
exports('call911', function(caller, location, description, postal, plate, cb, coords, customMeta)
    local serverId = DispatcherConfig.read().serverId
    enqueue(false, buildCall(caller, location, description, postal, plate, serverId, coords, customMeta), cb)
end)

exports('call911Ex', function(caller, location, description, postal, plate, cb, coords, customMeta)
    local serverId = DispatcherConfig.read().serverId
    enqueue(true, buildCall(caller, location, description, postal, plate, serverId, coords, customMeta), cb)
end)

-- removeCall(id, cb): take a call back through the dispatcher's REMOVE_911 door. id is
-- the id a call911 answer gave (the token after "ID: ": the CAD's id, our ULID or our
-- numeric ticket); cb(text, ok) gets the door's answer, e.g.
-- "EMERGENCY CALL REMOVAL QUEUED ID: <id>" or "CALL NOT FOUND: ...". One attempt: a
-- failure is the caller's to retry (status 0 or 503 say so).
exports('removeCall', function(id, cb)
    local cfg = DispatcherConfig.read()
    local text = tostring(id)
    local callId = text:match('^%d+$') and math.tointeger(tonumber(text)) or text
    local payload = json.encode({
        id = cfg.communityId,
        key = cfg.apiKey,
        type = 'REMOVE_911',
        data = { { serverId = cfg.serverId, callId = callId } },
    })
    PerformHttpRequest(cfg.url .. REMOVE_PATH, function(status, body, _headers, errorData)
        local answer = answerText(body, errorData)
        local ok = (tonumber(status) or 0) >= 200 and (tonumber(status) or 0) < 300
        log('removal of call %s: %s', text, answer:sub(1, 200))
        if cb ~= nil then
            local fine, err = pcall(cb, answer, ok)
            if not fine then
                log('^1the removeCall callback failed: %s^7', tostring(err))
            end
        end
    end, 'POST', payload, { ['Content-Type'] = 'application/json' })
end)

-- For takeover.lua (loaded after this file): queue a call object built elsewhere, with
-- call911Ex's callback and the call's idempotency key: cb(ok, id, text, key).
DispatcherSend = function(call, cb)
    local key
    key = enqueue(true, call, function(ok, id, text)
        cb(ok, id, text, key)
    end)
end

-- How many calls wait for the dispatcher (for a status command or a health check).
exports('pendingCalls', function()
    return #queue
end)

-- Say which calls wait in KVP over a stop, so nobody has to guess.
AddEventHandler('onResourceStop', function(name)
    if name ~= RESOURCE then
        return
    end
    for _, entry in ipairs(queue) do
        log('stopping with call %s not yet accepted by the dispatcher (%s @ %s): kept, sent after the restart',
            entry.key, tostring(entry.call.caller), tostring(entry.call.location))
    end
end)

-- The calls a previous run left, oldest first, with their keys: a call the dispatcher
-- took just before the stop comes back with its first id, not as a second call.
local function restore()
    local stored = GetResourceKvpString(KVP_QUEUE)
    local ok, kept = pcall(json.decode, stored or '[]')
    if not ok or type(kept) ~= 'table' then
        log('^1the stored queue is unreadable; starting empty^7')
        return
    end
    for _, item in ipairs(kept) do
        if type(item) == 'table' and type(item.key) == 'string' and type(item.call) == 'table' then
            queue[#queue + 1] = { call = item.call, key = item.key, rich = true, attempts = 0, sending = false }
        end
    end
    if #queue > 0 then
        log('%d call(s) restored from before the restart; sending them first', #queue)
        persist()
        drain()
    end
end

do
    local missing = DispatcherConfig.missing()
    if #missing > 0 then
        log('^3convar(s) not set: %s; the dispatcher will refuse calls until they are^7',
            table.concat(missing, ', '))
    end
    -- A URL may carry a password (http://user:pass@host); the log line must not.
    local url = DispatcherConfig.read().url:gsub('//[^/@]*@', '//***@')
    log('sending 911 calls to %s%s', url, CALL_PATH)
    restore()
end
