-- PerformHttpRequest for fivem_harness.lua: a real request (made by fivem_http.py, since
-- Lua has no HTTP client), answered the way FXServer answers.
--
--   dofile('fivem_harness_http.lua')({ harnessDir, schedule, protect, trace })
--
-- defines the global PerformHttpRequest. HARNESS_PYTHON is the interpreter that runs
-- fivem_http.py; HARNESS_LOSE_RESPONSES loses the answers of the first N requests.

return function(h)
local schedule, protect, trace = h.schedule, h.protect, h.trace

local python = os.getenv('HARNESS_PYTHON') or 'python3'
local loseResponses = tonumber(os.getenv('HARNESS_LOSE_RESPONSES') or '0')
local requests = 0

local function shellQuote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function realRequest(request)
    local path = os.tmpname()
    local fh = assert(io.open(path, 'w'))
    fh:write(json.encode(request))
    fh:close()
    local cmd = ('%s %s %s'):format(shellQuote(python), shellQuote(h.harnessDir .. '/fivem_http.py'),
        shellQuote(path))
    local pipe = assert(io.popen(cmd, 'r'))
    local out = pipe:read('a')
    pipe:close()
    os.remove(path)
    local answer = json.decode(out)
    assert(type(answer) == 'table', 'fivem_http.py printed no answer: ' .. tostring(out))
    return answer
end

-- FXServer (HttpScriptFunctions.cpp + scheduler.lua) calls back with
-- (status, body, headers, errorData): on 2xx the body and headers, errorData nil; on an
-- HTTP error or no answer, body nil, headers {} and errorData "HTTP <status>: <body>"
-- (or the transport error text, status 0). The callback always comes later, from the
-- event loop, never from inside PerformHttpRequest.
function PerformHttpRequest(url, cb, method, data, headers)
    requests = requests + 1
    local answer = realRequest({ url = url, method = method or 'GET', data = data or '', headers = headers or {} })
    local status, body = answer.status, answer.body
    trace('%s %s -> %d', method or 'GET', url, status)
    if requests <= loseResponses then
        trace('lost response %d %s', status, tostring(body))
        schedule(0, function() protect(cb, 0, nil, {}, 'Timeout was reached') end)
        return
    end
    schedule(0, function()
        if status >= 200 and status < 400 then
            protect(cb, status, body, answer.headers or {}, nil)
        elseif status == 0 then
            protect(cb, 0, nil, {}, answer.error or 'Failure handling HTTP request')
        else
            protect(cb, status, nil, {}, ('HTTP %d: %s'):format(status, body or ''))
        end
    end)
end
end
