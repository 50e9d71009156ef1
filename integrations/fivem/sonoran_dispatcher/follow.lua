-- Following a queued call until the CAD has it, to learn the CAD's own call id.
--
-- The official callcommands plugin raises `EmergencyCallAdd(source, cadCallId)` once the
-- CAD created the call. When our door answers `EMERGENCY CALL QUEUED ID: <ticket>` (the
-- CAD did not answer within sonoran_dispatcher_wait), the CAD's id comes later. The door
-- answers a request whose Idempotency-Key it has seen with that call's outcome, without
-- recording a second call; with `Prefer: wait=1` that outcome is the CAD's own
-- `EMERGENCY CALL ADDED ID: <cad id>` once the call is delivered. So the call is asked
-- again, with its key, on a schedule (`sonoran_dispatcher_follow`, seconds between
-- asks; default 5, 15, 45, 120, then 300 five times: about 28 minutes in all), and
-- onAdded(cadId, text) is called the first time the answer is ADDED. After the last ask,
-- or on a refusal, it stops and logs once; the call stays safe with the dispatcher
-- either way (`dispatcher status <ticket>`).
--
-- The schedule's total is capped at MAX_TOTAL_S: the door keeps a key for a day
-- (IDEMPOTENCY_TTL_S), and a key asked after that would be a new call.
-- Follows live in memory: a resource restart ends them (the call is not affected).

local RESOURCE = GetCurrentResourceName()
local DEFAULT_SCHEDULE = '5,15,45,120,300,300,300,300,300'
local MAX_TOTAL_S = 6 * 3600
local ASK_WAIT_S = 1

local function log(fmt, ...)
    print(('[%s] ' .. fmt):format(RESOURCE, ...))
end

local function parse(text)
    local delays, total = {}, 0
    for item in text:gmatch('[^,]+') do
        local seconds = tonumber(item)
        if not seconds or seconds <= 0 then
            return nil
        end
        delays[#delays + 1] = seconds
        total = total + seconds
    end
    if #delays == 0 or total > MAX_TOTAL_S then
        return nil
    end
    return delays
end

-- The schedule from its convar: positive numbers of seconds, comma-separated. Anything
-- else, or a total above MAX_TOTAL_S, falls back to the default (with a warning).
local function schedule()
    local text = GetConvar('sonoran_dispatcher_follow', DEFAULT_SCHEDULE)
    local delays = parse(text)
    if delays == nil then
        log('^3sonoran_dispatcher_follow "%s" is not a list of positive seconds adding up to at most %d; using "%s"^7',
            text, MAX_TOTAL_S, DEFAULT_SCHEDULE)
        delays = parse(DEFAULT_SCHEDULE)
    end
    return delays
end

-- Follow the call made with `key` (answered QUEUED with `ticket`) until the door answers
-- ADDED; then onAdded(cadId, text), once. `call` is the call object sent first: the
-- door reads only the key of a repeat, but the body must still be a valid request.
DispatcherFollow = function(key, ticket, call, onAdded)
    local delays = schedule()
    local step, waited = 0, 0

    local ask
    local function later()
        step = step + 1
        if step > #delays then
            log('stopped following call %s after %d s: the CAD has not taken it yet; it stays queued with the dispatcher (dispatcher status %s)',
                tostring(ticket), waited, tostring(ticket))
            return
        end
        waited = waited + delays[step]
        SetTimeout(math.floor(delays[step] * 1000), ask)
    end

    ask = function()
        DispatcherPost(DispatcherConfig.read(), call, key, ASK_WAIT_S, function(status, text)
            if status >= 200 and status < 300 then
                local cadId = text:match('^EMERGENCY CALL ADDED ID:%s*(%S+)')
                if cadId then
                    log('call %s is in the CAD as %s', tostring(ticket), cadId)
                    onAdded(math.tointeger(tonumber(cadId)) or cadId, text)
                    return
                end
            elseif status >= 400 and status < 500 and status ~= 408 and status ~= 429 then
                -- A refusal does not change by asking again: the CAD refused the call
                -- (a dead letter now) or the convars changed since it was made.
                log('^1stopped following call %s: %s^7', tostring(ticket), text:sub(1, 200))
                return
            end
            later()
        end)
    end

    later()
end
