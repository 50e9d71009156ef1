-- Record a delivery; always wins, whoever else touched the call meanwhile
-- (dispatcher.lifecycle.Lifecycle.delivered). The CAD answered: the breaker closes.
-- A door waiting on the call (notify='1') hears of it on {prefix}:outcomes (_notify.lua).
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id      ARGV[2]  now            ARGV[3]  the CAD's call id ('' : unknown)
-- ARGV[4]  HTTP status  ARGV[5]  CAD response   ARGV[6]  record TTL, s (0 : keep)
-- ARGV[7]  latency bucket ('' : none)           ARGV[8]  request duration, s
-- Returns 'delivered', 'already' or 'missing'.
--!include _calls.lua
--!include _circuit.lua
--!include _observe.lua
--!include _notify.lua
local id, now, cad_id, status, response = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local ttl, bucket, seconds = tonumber(ARGV[6]), ARGV[7], ARGV[8]
observe(k('latency'), 'delivered', bucket, seconds)
local st = redis.call('HGET', ck(id), 'state')
if not st then return 'missing' end
if st == 'delivered' then return 'already' end
unplace(id)
redis.call('HINCRBY', ck(id), 'attempts', 1)
redis.call('HSET', ck(id), 'state', 'delivered', 'cad_call_id', cad_id, 'status_code', status,
  'response', response, 'delivered_at', now, 'updated_at', now, 'last_error', '', 'reason', '')
redis.call('HINCRBY', k('counters'), 'delivered', 1)
notify_outcome(id)
circuit_success(now)
if ttl > 0 then redis.call('EXPIRE', ck(id), ttl) end
return 'delivered'
