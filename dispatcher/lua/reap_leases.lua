-- Calls whose worker died mid-send (lease expired in ``inflight``): the CAD may or may
-- not have them, so they wait for their server's read-back (``verifying``); where the
-- CAD has no read-back they go back in line, a possible duplicate each. One attempt
-- counted (dispatcher.schedule.Pump.tick, step 2).
-- KEYS[1]  key prefix (see _calls.lua; walks up to ARGV[2] calls)
-- ARGV[1]  now          ARGV[2]  most calls moved       ARGV[3]  read-back delay, s
-- Returns how many leases had expired.
--!include _calls.lua
--!include _circuit.lua
--!include _verify.lua
local now, limit, delay = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3] or '0')
local ids = redis.call('ZRANGEBYSCORE', k('inflight'), '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('inflight'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
  if r[1] == 'sending' then
    -- The worker vanished mid-send; the CAD may or may not have the call.
    redis.call('HINCRBY', ck(id), 'attempts', 1)
    redis.call('HSET', ck(id), 'last_error', 'worker lost during the send (lease expired)')
    redis.call('HINCRBY', k('counters'), 'leases_expired', 1)
    release_probe(id)
    if redis.call('HGET', ck(id), 'op') == 'remove' then
      hold(id, tonumber(r[2]), now)  -- a removal is safe to send again
    elseif readback_unavailable(now) then
      redis.call('HINCRBY', k('counters'), 'possible_duplicates', 1)
      hold(id, tonumber(r[2]), now)
    else
      enter_verifying(id, tonumber(r[2]), now, call_server(id), now + delay)
    end
  end
end
return #ids
