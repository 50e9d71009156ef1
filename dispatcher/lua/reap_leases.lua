-- Calls whose worker died mid-send (lease expired in ``inflight``) go back in line, one
-- attempt counted (dispatcher.schedule.Pump.tick, step 2).
-- KEYS[1]  key prefix (see _calls.lua; walks up to ARGV[2] calls)
-- ARGV[1]  now          ARGV[2]  most calls moved
-- Returns how many leases had expired.
--!include _calls.lua
--!include _circuit.lua
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', k('inflight'), '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('inflight'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
  if r[1] == 'sending' then
    -- The worker vanished mid-send; the CAD may or may not have the call (see README).
    redis.call('HINCRBY', ck(id), 'attempts', 1)
    redis.call('HSET', ck(id), 'last_error', 'worker lost during the send (lease expired)')
    redis.call('HINCRBY', k('counters'), 'leases_expired', 1)
    release_probe(id)
    hold(id, tonumber(r[2]), now)
  end
end
return #ids
