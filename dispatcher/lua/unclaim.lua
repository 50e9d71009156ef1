-- Give a claimed call back to the line unsent, no attempt counted
-- (dispatcher.lifecycle.Lifecycle.unclaim).
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id      ARGV[2]  generation      ARGV[3]  now
-- Returns 'held', 'cancelled' (it was taken back meanwhile) or 'stale'.
--!include _calls.lua
--!include _circuit.lua
local id, gen, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local r = redis.call('HMGET', ck(id), 'state', 'gen', 'enqueued_at')
if r[1] ~= 'sending' or r[2] ~= gen then return 'stale' end
redis.call('ZREM', k('inflight'), id)
release_probe(id)
if remove_requested(id) then
  cancel(id, now, 'taken back before it was sent')
  return 'cancelled'
end
hold(id, tonumber(r[3]), now)
return 'held'
