-- Record that the CAD no longer has a call we took back (dispatcher.lifecycle.Lifecycle
-- .removed): its REMOVE_911 / DELETE was accepted, or the CAD said the call is gone.
-- The CAD answered: the breaker closes.
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id      ARGV[2]  generation      ARGV[3]  now
-- ARGV[4]  HTTP status  ARGV[5]  CAD response    ARGV[6]  record TTL, s (0 : keep)
-- Returns 'removed' or 'stale'.
--!include _calls.lua
--!include _circuit.lua
local id, gen, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local status, response, ttl = ARGV[4], ARGV[5], tonumber(ARGV[6])
local r = redis.call('HMGET', ck(id), 'state', 'gen', 'op')
if r[1] ~= 'sending' or r[2] ~= gen or r[3] ~= 'remove' then return 'stale' end
unplace(id)
redis.call('HINCRBY', ck(id), 'attempts', 1)
redis.call('HSET', ck(id), 'state', 'removed', 'op', '', 'removed_at', now, 'updated_at', now,
  'status_code', status, 'response', response, 'last_error', '')
redis.call('HINCRBY', k('counters'), 'removed', 1)
circuit_success(now)
if ttl > 0 then keep_for(id, ttl) end
return 'removed'
