-- Record a delivery; always wins, whoever else touched the call meanwhile
-- (dispatcher.lifecycle.Lifecycle.delivered). The CAD answered: the breaker closes.
-- A call taken back meanwhile is removed from the CAD now (see _deliver.lua).
-- A door waiting on the call (notify='1') hears of it on {prefix}:outcomes (_notify.lua).
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id      ARGV[2]  now            ARGV[3]  the CAD's call id ('' : unknown)
-- ARGV[4]  HTTP status  ARGV[5]  CAD response   ARGV[6]  record TTL, s (0 : keep)
-- ARGV[7]  latency bucket ('' : none)           ARGV[8]  request duration, s
-- Returns 'delivered', 'already' or 'missing'.
--!include _calls.lua
--!include _circuit.lua
--!include _observe.lua
--!include _deliver.lua
local id, now, cad_id, status, response = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local ttl, bucket, seconds = tonumber(ARGV[6]), ARGV[7], ARGV[8]
observe(k('latency'), 'delivered', bucket, seconds)
local r = redis.call('HMGET', ck(id), 'state', 'op')
local st = r[1]
if not st then return 'missing' end
if st == 'delivered' or st == 'removed' or r[2] == 'remove' then return 'already' end
redis.call('HINCRBY', ck(id), 'attempts', 1)
-- Taken back on a wrong belief that the CAD did not have it (a late answer): remove it.
if st == 'cancelled' then redis.call('HSET', ck(id), 'remove_requested', '1') end
mark_delivered(id, now, cad_id, status, response, ttl)
circuit_success(now)
return 'delivered'
