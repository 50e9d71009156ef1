-- Take a queued call for sending, or say why not: atomic with the breaker and the rate
-- limiter (dispatcher.lifecycle.Lifecycle.claim).
-- KEYS[1]  key prefix (see _calls.lua; the re-slotting walks every queued call)
-- ARGV[1]  call id                 ARGV[2]  generation of the message
-- ARGV[3]  now                     ARGV[4]  lease, s (inflight until start + lease)
-- ARGV[5]  max age, s (0 : none)   ARGV[6]  breaker probe's lease, s
-- ARGV[7]  rate interval, s        ARGV[8]  longest slot wait, s
-- ARGV[9]  the limit itself, s (1/DISPATCHER_MAX_RATE)
-- ARGV[10] a slot this far past (or one interval) is stale and re-slots the line, s
-- Returns {'claimed', call JSON, failures, wait s, enqueued_at, op, the CAD's id},
-- {'held', why} (circuit, paused, rate), {'stale', state}, {'expired'} or {'missing'}.
-- op 'remove': the claim is of a delivered call's removal (dispatcher.takeback); the
-- CAD's id is then the call to remove. A removal never expires.
--!include _calls.lua
--!include _circuit.lua
--!include _ratelimit.lua
local id, gen, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lease, max_age, probe_lease = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local interval, max_wait, limit_gap = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local stale_s = tonumber(ARGV[10])

local r = redis.call('HMGET', ck(id), 'state', 'gen', 'age_from', 'enqueued_at', 'call',
  'failures', 'slot', 'op', 'cad_call_id')
local op = r[8] or ''
if not r[1] then return {'missing'} end
if r[1] ~= 'queued' or r[2] ~= gen then return {'stale', r[1]} end
local enq = tonumber(r[4])
redis.call('ZREM', k('queued'), id)
if max_age > 0 and op ~= 'remove' and now - tonumber(r[3]) > max_age then
  bury(id, now, 'expired', '', '', 'older than DISPATCHER_MAX_AGE_S before it could be sent')
  return {'expired'}
end
local admitted, st = circuit_admit(id, now, probe_lease)
if not admitted then
  hold(id, enq, now)
  return {'held', 'circuit'}
end
-- A 429 pause holds every call, whatever slot it was given.
if rate_paused(now) then
  release_probe(id)
  hold(id, enq, now)
  return {'held', 'paused'}
end
local start = rate_grant(id, num(r[7], 0), now, interval, max_wait, limit_gap, stale_s,
  st == 'closed')
if start - now > max_wait then
  release_probe(id)
  hold(id, enq, now)
  redis.call('HINCRBY', k('counters'), 'rate_limit_waits', 1)
  return {'held', 'rate'}
end
redis.call('HSET', ck(id), 'state', 'sending', 'updated_at', now)
redis.call('ZADD', k('inflight'), start + lease, id)
return {'claimed', r[5], r[6] or '0', tostring(start - now), r[4], op, r[9] or ''}
