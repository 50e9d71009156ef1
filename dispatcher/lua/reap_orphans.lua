-- Calls whose Celery message was lost (``queued`` since before the cutoff) go back in
-- line (dispatcher.schedule.Pump.tick, step 3).
-- KEYS[1]  key prefix (see _calls.lua; walks up to ARGV[3] calls)
-- ARGV[1]  now          ARGV[2]  cutoff (queued before it: orphaned)   ARGV[3]  most calls moved
-- Returns how many entries of ``queued`` were older than the cutoff.
--!include _calls.lua
local now, cutoff, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', k('queued'), '-inf', cutoff, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('queued'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
  if r[1] == 'queued' then
    redis.call('HINCRBY', k('counters'), 'orphans_recovered', 1)
    hold(id, tonumber(r[2]), now)
  end
end
return #ids
