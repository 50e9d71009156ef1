-- Calls whose last send has an unknown outcome (dispatcher.readback). Needs _calls.lua.
-- zset {p}:verifying          every verifying call, by enqueue time (its place in line)
-- zset {p}:verifying:{server} the same calls of one server ('' : SONORAN_SERVER_ID)
-- hash {p}:readback:{server}  that server's read-back: gen, state (idle/running),
--                             lease_until, next_at, due_at, failures, last_at, last_error
-- hash {p}:readback           unavailable_until, reason, since (the CAD has no read-back)
-- set  {p}:readback:servers   servers with verifying calls

local function rb(server) return k('readback:' .. server) end

-- Is the read-back known not to work (v1 without the Plus plan)? Then an unknown
-- outcome is re-sent as before, and counted as a possible duplicate.
local function readback_unavailable(now)
  return num(redis.call('HGET', k('readback'), 'unavailable_until'), 0) > now
end

-- The server a stored call goes to ('' : the worker's SONORAN_SERVER_ID).
local function call_server(id)
  local raw = redis.call('HGET', ck(id), 'call')
  local ok, c = pcall(cjson.decode, raw or '{}')
  if ok and type(c) == 'table' and c.serverId ~= nil and c.serverId ~= cjson.null then
    if type(c.serverId) == 'number' then return string.format('%d', c.serverId) end
    return tostring(c.serverId)
  end
  return ''
end

-- Call ``id`` waits for its server's next read-back, which may settle it from ``at`` on.
local function enter_verifying(id, enq, now, server, at)
  redis.call('HSET', ck(id), 'state', 'verifying', 'verify_at', at, 'verify_server', server,
    'updated_at', now)
  redis.call('ZADD', k('verifying'), enq, id)
  redis.call('ZADD', k('verifying:' .. server), enq, id)
  redis.call('SADD', k('readback:servers'), server)
  local due = num(redis.call('HGET', rb(server), 'due_at'), 0)
  if due == 0 or at < due then redis.call('HSET', rb(server), 'due_at', at) end
  redis.call('HINCRBY', k('counters'), 'verifying', 1)
end

local function leave_verifying(id, server)
  redis.call('ZREM', k('verifying'), id)
  redis.call('ZREM', k('verifying:' .. server), id)
end

-- After a read-back (or a fallback) took calls out: when the next one is due, or the
-- server leaves the set when none is left.
local function verifying_rest(server)
  local ids = redis.call('ZRANGE', k('verifying:' .. server), 0, -1)
  if #ids == 0 then
    redis.call('SREM', k('readback:servers'), server)
    redis.call('HDEL', rb(server), 'due_at')
    return 0
  end
  local due = nil
  for _, id in ipairs(ids) do
    local at = num(redis.call('HGET', ck(id), 'verify_at'), 0)
    if due == nil or at < due then due = at end
  end
  redis.call('HSET', rb(server), 'due_at', due)
  return #ids
end

-- No read-back: the server's verifying calls go back in line to be sent again, each a
-- possible duplicate (counted).
local function verifying_fallback(server, now, why)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', k('verifying:' .. server), 0, -1)) do
    leave_verifying(id, server)
    local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
    if r[1] == 'verifying' and remove_requested(id) then
      cancel(id, now, 'taken back; whether the CAD has it cannot be checked')
    elseif r[1] == 'verifying' then
      redis.call('HSET', ck(id), 'last_error', why)
      hold(id, tonumber(r[2]), now)
      n = n + 1
    end
  end
  redis.call('HINCRBY', k('counters'), 'possible_duplicates', n)
  verifying_rest(server)
  return n
end
