-- The oldest held calls get a Celery message (a new generation and a rate slot), as many
-- as the breaker and the rate limiter can take within the lookahead; one probe
-- when the breaker may test (dispatcher.schedule.Pump.tick, step 6).
-- KEYS[1]  key prefix (see _calls.lua; walks up to ARGV[2] calls)
-- ARGV[1]  now          ARGV[2]  most calls released
-- ARGV[3]  rate interval, s        ARGV[4]  lookahead, s      ARGV[5]  window
-- Returns a flat list: first, in how many seconds the rate limiter may give the next
-- message (text; 0 when it may now or the rate is not what holds it), then 2 per released
-- call, oldest first: id, gen (of its new message).
--!include _calls.lua
--!include _circuit.lua
--!include _ratelimit.lua
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local interval, ahead, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = capacity(now, interval, ahead, window)
if n == 0 and redis.call('ZCARD', k('queued')) == 0 then
  -- One probe when the open breaker's cooldown is over (or a probe's lease ran out).
  if not rate_paused(now) and circuit_probe_due(now) then n = 1 end
end
if n > limit then n = limit end
-- When the next slot comes within the lookahead (after what this release reserves).
local function next_release()
  if interval <= 0 then return '0' end
  local rate = redis.call('HMGET', k('rate'), 'tat', 'pause_until')
  local at = math.max(num(rate[1], 0) - ahead, num(rate[2], 0))
  return tostring(math.max(0, at - now))
end
if n <= 0 then return {next_release()} end
local out = {'0'}
local ids = redis.call('ZRANGE', k('held'), 0, n - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('held'), id)
  if redis.call('HGET', ck(id), 'state') == 'held' then
    local g = redis.call('HINCRBY', ck(id), 'gen', 1)
    local slot = reserve_slot(now, interval)
    redis.call('HSET', ck(id), 'state', 'queued', 'updated_at', now, 'slot', slot)
    redis.call('ZADD', k('queued'), now, id)
    table.insert(out, id)
    table.insert(out, g)
  end
end
out[1] = next_release()
return out
