-- Configuration of sonoran_dispatcher, read from convars (set them in server.cfg).
--
-- Convars are read again for every request rather than once at start-up, so an
-- operator who fixes a wrong key or URL with `set ...` in the console does not have
-- to restart the resource, and calls still waiting in the retry queue go out with the
-- corrected values.

DispatcherConfig = {}

-- Defaults. Change them with convars, not here, so an update of the resource does
-- not overwrite your settings.
local DEFAULTS = {
    url = 'http://127.0.0.1:8000',  -- the dispatcher's `web` process
    serverId = '1',                 -- the official resource's default
    queueSize = 100,                -- calls held while the dispatcher is unreachable
    retryMinMs = 1000,              -- first retry delay; doubles on every failure...
    retryMaxMs = 30000,             -- ...up to this
    waitSeconds = 3,                -- Prefer: wait=N, so the callback gets the CAD's own id; 0: never wait
    inFlight = 8,                   -- requests to the dispatcher at once
}

local function number(name, default, minimum)
    local value = tonumber(GetConvar(name, tostring(default)))
    if not value or value < minimum then
        return default
    end
    return math.floor(value)
end

-- The official sonorancad resource's docs spell it `sonoran_communityID`; accept the
-- camel-case spelling too, since convar names are easy to get wrong by one letter.
local function communityId()
    local value = GetConvar('sonoran_communityID', '')
    if value == '' then
        value = GetConvar('sonoran_communityId', '')
    end
    return value
end

-- Everything one request needs. The API key is in here: never print this table.
function DispatcherConfig.read()
    local url = GetConvar('sonoran_dispatcher_url', DEFAULTS.url):gsub('/+$', '')
    local minMs = number('sonoran_dispatcher_retry_min_ms', DEFAULTS.retryMinMs, 1)
    return {
        url = url,
        communityId = communityId(),
        apiKey = GetConvar('sonoran_apiKey', ''),
        serverId = GetConvar('sonoran_serverId', DEFAULTS.serverId),
        queueSize = number('sonoran_dispatcher_queue_size', DEFAULTS.queueSize, 1),
        retryMinMs = minMs,
        retryMaxMs = math.max(minMs, number('sonoran_dispatcher_retry_max_ms', DEFAULTS.retryMaxMs, 1)),
        -- FXServer gives up on a request that has not answered within 5 s: a longer wait
        -- would turn every slow CAD into a timeout and a retry.
        waitSeconds = math.min(4, number('sonoran_dispatcher_wait', DEFAULTS.waitSeconds, 0)),
        inFlight = number('sonoran_dispatcher_in_flight', DEFAULTS.inFlight, 1),
    }
end

-- Names of required convars that are empty (for a start-up warning; no values).
function DispatcherConfig.missing()
    local missing = {}
    if communityId() == '' then
        missing[#missing + 1] = 'sonoran_communityID'
    end
    if GetConvar('sonoran_apiKey', '') == '' then
        missing[#missing + 1] = 'sonoran_apiKey'
    end
    return missing
end
