-- Shared by every script that changes a call's place (dispatcher.lifecycle and friends).
-- KEYS[1]  the key prefix (``dispatcher``): these scripts walk call records by id, so
--          they build every key from it (k(name), ck(id)). Redis Cluster is unsupported.
-- Numbers that go back to Python are returned as strings: Redis truncates Lua numbers.
local P = KEYS[1]
local function k(name) return P .. ':' .. name end
local function ck(id) return P .. ':call:' .. id end
local function num(v, d) if v then return tonumber(v) or d end return d end

local function hold(id, enq, now)
  redis.call('HSET', ck(id), 'state', 'held', 'updated_at', now)
  redis.call('ZADD', k('held'), enq, id)
end

local function unplace(id)
  for _, z in ipairs({'held', 'queued', 'scheduled', 'inflight', 'pending', 'dead'}) do
    redis.call('ZREM', k(z), id)
  end
  if redis.call('ZREM', k('verifying'), id) == 1 then
    local server = redis.call('HGET', ck(id), 'verify_server') or ''
    redis.call('ZREM', k('verifying:' .. server), id)
  end
end

local function bury(id, now, reason, status, response, err)
  unplace(id)
  redis.call('HSET', ck(id), 'state', 'dead', 'reason', reason, 'status_code', status,
    'response', response, 'last_error', err, 'dead_at', now, 'updated_at', now)
  redis.call('ZADD', k('dead'), now, id)
  redis.call('HINCRBY', k('counters'), 'dead:' .. reason, 1)
end

-- Taken back before the CAD had it (dispatcher.takeback): never sent. The record is kept
-- for `dispatcher status` as long as a delivered one (its record_ttl, set when taken back).
local function cancel(id, now, why)
  unplace(id)
  redis.call('HSET', ck(id), 'state', 'cancelled', 'cancelled_at', now, 'updated_at', now,
    'op', '', 'remove_requested', '', 'last_error', why)
  redis.call('HINCRBY', k('counters'), 'cancelled', 1)
  local ttl = tonumber(redis.call('HGET', ck(id), 'record_ttl') or '0') or 0
  if ttl > 0 then redis.call('EXPIRE', ck(id), ttl) end
end

-- Was this call asked to be taken back while its send was under way?
local function remove_requested(id)
  return redis.call('HGET', ck(id), 'remove_requested') == '1'
end

-- A delivered call to be removed from the CAD: it goes through the line like a call
-- (op 'remove': the worker sends REMOVE_911 / DELETE), at its old place, so soon.
local function start_removal(id, now)
  local enq = tonumber(redis.call('HGET', ck(id), 'enqueued_at'))
  redis.call('PERSIST', ck(id))
  redis.call('HSET', ck(id), 'op', 'remove', 'remove_requested', '', 'failures', 0,
    'removal_at', now)
  redis.call('HINCRBY', k('counters'), 'removals', 1)
  hold(id, enq, now)
end
