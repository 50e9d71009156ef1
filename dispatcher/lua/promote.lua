-- Due retries go back in line, by enqueue time (dispatcher.schedule.Pump.tick, step 1).
-- KEYS[1]  key prefix (see _calls.lua; walks up to ARGV[2] calls)
-- ARGV[1]  now          ARGV[2]  most calls moved
-- Returns how many entries of ``scheduled`` were due.
--!include _calls.lua
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', k('scheduled'), '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('scheduled'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
  if r[1] == 'scheduled' then hold(id, tonumber(r[2]), now) end
end
return #ids
