-- Record a permanent failure: the call becomes a dead letter
-- (dispatcher.lifecycle.Lifecycle.dead). The CAD answered, so the breaker closes. A
-- removal's dead letter is of kind 'removal' (its replay retries the removal); a call
-- taken back while it was sent, which the CAD refused, is cancelled instead.
-- A door waiting on the call (notify='1') hears of it on {prefix}:outcomes (_notify.lua).
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id      ARGV[2]  generation      ARGV[3]  now
-- ARGV[4]  reason       ARGV[5]  HTTP status ('' : none)   ARGV[6]  CAD response
-- ARGV[7]  error text   ARGV[8]  latency bucket ('' : none) ARGV[9]  request duration, s
-- Returns 'dead', 'cancelled' or 'stale'.
--!include _calls.lua
--!include _circuit.lua
--!include _observe.lua
--!include _notify.lua
local id, gen, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local reason, status, response, err = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local bucket, seconds = ARGV[8], ARGV[9]
observe(k('latency'), 'permanent', bucket, seconds)
local r = redis.call('HMGET', ck(id), 'state', 'gen', 'op')
if r[1] ~= 'sending' or r[2] ~= gen then return 'stale' end
redis.call('HINCRBY', ck(id), 'attempts', 1)
circuit_success(now)
if r[3] ~= 'remove' and remove_requested(id) then
  cancel(id, now, 'taken back while it was sent; the CAD refused it: ' .. err)
  return 'cancelled'
end
bury(id, now, reason, status, response, err)
redis.call('HSET', ck(id), 'kind', r[3] == 'remove' and 'removal' or 'call')
notify_outcome(id)
return 'dead'
