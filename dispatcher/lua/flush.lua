-- After the breaker closed (its ``flush`` flag), every call still on backoff goes back
-- in line, a batch per run; the flag clears with the last batch
-- (dispatcher.schedule.Pump.tick, step 4).
-- KEYS[1]  key prefix (see _calls.lua; walks up to ARGV[2] calls)
-- ARGV[1]  now          ARGV[2]  most calls moved
-- Returns how many calls were moved.
--!include _calls.lua
--!include _circuit.lua
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if not circuit_flush_due() then return 0 end
local ids = redis.call('ZRANGE', k('scheduled'), 0, limit - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('scheduled'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
  if r[1] == 'scheduled' then hold(id, tonumber(r[2]), now) end
end
if #ids < limit then circuit_flush_done() end
return #ids
