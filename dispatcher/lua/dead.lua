-- Record a permanent failure: the call becomes a dead letter
-- (dispatcher.lifecycle.Lifecycle.dead). The CAD answered, so the breaker closes.
-- A door waiting on the call (notify='1') hears of it on {prefix}:outcomes (_notify.lua).
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id      ARGV[2]  generation      ARGV[3]  now
-- ARGV[4]  reason       ARGV[5]  HTTP status ('' : none)   ARGV[6]  CAD response
-- ARGV[7]  error text   ARGV[8]  latency bucket ('' : none) ARGV[9]  request duration, s
-- Returns 'dead' or 'stale'.
--!include _calls.lua
--!include _circuit.lua
--!include _observe.lua
--!include _notify.lua
local id, gen, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local reason, status, response, err = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local bucket, seconds = ARGV[8], ARGV[9]
observe(k('latency'), 'permanent', bucket, seconds)
local r = redis.call('HMGET', ck(id), 'state', 'gen')
if r[1] ~= 'sending' or r[2] ~= gen then return 'stale' end
redis.call('HINCRBY', ck(id), 'attempts', 1)
bury(id, now, reason, status, response, err)
notify_outcome(id)
circuit_success(now)
return 'dead'
