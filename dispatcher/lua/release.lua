-- The oldest held calls get a Celery message (a new generation and a rate slot), as many
-- as the breaker and the rate limiter can take within the next slot wait; one probe
-- when the breaker may test (dispatcher.schedule.Pump.tick, step 6).
-- KEYS[1]  key prefix (see _calls.lua; walks up to ARGV[2] calls)
-- ARGV[1]  now          ARGV[2]  most calls released
-- ARGV[3]  rate interval, s        ARGV[4]  longest slot wait, s      ARGV[5]  window
-- Returns a flat list, 5 per released call: id, gen, call JSON, enqueued_at, idempotency key.
--!include _calls.lua
--!include _circuit.lua
--!include _ratelimit.lua
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local interval, max_wait, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = capacity(now, interval, max_wait, window)
if n == 0 and redis.call('ZCARD', k('queued')) == 0 then
  -- One probe when the open breaker's cooldown is over (or a probe's lease ran out).
  if not rate_paused(now) and circuit_probe_due(now) then n = 1 end
end
if n > limit then n = limit end
if n <= 0 then return {} end
local out = {}
local ids = redis.call('ZRANGE', k('held'), 0, n - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('held'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'call', 'enqueued_at', 'idempotency_key')
  if r[1] == 'held' then
    local g = redis.call('HINCRBY', ck(id), 'gen', 1)
    local slot = reserve_slot(now, interval)
    redis.call('HSET', ck(id), 'state', 'queued', 'updated_at', now, 'slot', slot)
    redis.call('ZADD', k('queued'), now, id)
    for _, v in ipairs({id, tostring(g), r[2], r[3], r[4] or ''}) do table.insert(out, v) end
  end
end
return out
