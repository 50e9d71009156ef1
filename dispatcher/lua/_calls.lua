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
