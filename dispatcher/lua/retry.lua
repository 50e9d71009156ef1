-- Record a retryable failure (dispatcher.lifecycle.Lifecycle.retry): a 429 pauses every
-- sender and holds the call in its place; any other error counts against the breaker
-- and schedules the call for its backoff (or holds it when the breaker opened). An
-- ambiguous one (the answer was lost after the request was written) makes the call
-- ``verifying``: its server's next read-back decides (dispatcher.readback); where the
-- CAD has no read-back it is scheduled as before and counted as a possible duplicate.
-- A call taken back while it was sent (not created, the outcome being known) is
-- cancelled; a removal (op 'remove') is retried like a call.
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id        ARGV[2]  generation       ARGV[3]  now
-- ARGV[4]  due (backoff)  ARGV[5]  error text       ARGV[6]  HTTP status ('' : none)
-- ARGV[7]  CAD response   ARGV[8]  'ratelimit' (a 429), 'error' or 'ambiguous'
-- ARGV[9]  429 pause, s   ARGV[10] breaker failure threshold
-- ARGV[11] breaker cooldown, s                      ARGV[12] longest cooldown, s
-- ARGV[13] latency bucket ('' : none)               ARGV[14] request duration, s
-- ARGV[15] the call's server id (ambiguous only)    ARGV[16] earliest read-back, time
-- Returns 'held', 'scheduled', 'verifying', 'cancelled' or 'stale'.
--!include _calls.lua
--!include _circuit.lua
--!include _ratelimit.lua
--!include _observe.lua
--!include _verify.lua
local id, gen, now, due = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local err, status, response, kind = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local pause_s, threshold = tonumber(ARGV[9]), tonumber(ARGV[10])
local cooldown, max_cooldown = tonumber(ARGV[11]), tonumber(ARGV[12])
local bucket, seconds = ARGV[13], ARGV[14]
local server, verify_at = ARGV[15] or '', tonumber(ARGV[16] or '0')
observe(k('latency'), 'retryable', bucket, seconds)
local r = redis.call('HMGET', ck(id), 'state', 'gen', 'enqueued_at')
if r[1] ~= 'sending' or r[2] ~= gen then return 'stale' end
if kind ~= 'ambiguous' and remove_requested(id) then
  redis.call('HINCRBY', ck(id), 'attempts', 1)
  release_probe(id)
  cancel(id, now, 'taken back while it was sent; the CAD did not create it: ' .. err)
  return 'cancelled'
end
redis.call('ZREM', k('inflight'), id)
redis.call('HINCRBY', ck(id), 'attempts', 1)
redis.call('HSET', ck(id), 'last_error', err, 'status_code', status, 'response', response,
  'updated_at', now)
if kind == 'ratelimit' then
  -- A 429 pauses every sender and costs the call nothing: back in line, same place.
  rate_pause(now + pause_s)
  redis.call('HINCRBY', k('counters'), 'rate_limited', 1)
  circuit_success(now)
  hold(id, tonumber(r[3]), now)
  return 'held'
end
redis.call('HINCRBY', ck(id), 'failures', 1)
redis.call('HINCRBY', k('counters'), 'retried', 1)
circuit_failure(id, now, err, threshold, cooldown, max_cooldown)
release_probe(id)
if kind == 'ambiguous' then
  if not readback_unavailable(now) then
    enter_verifying(id, tonumber(r[3]), now, server, verify_at)
    return 'verifying'
  end
  redis.call('HINCRBY', k('counters'), 'possible_duplicates', 1)
end
if circuit_is_open() then
  -- The CAD is down: the breaker paces retries now; keep the call's place in line so
  -- the backlog drains oldest first.
  hold(id, tonumber(r[3]), now)
  return 'held'
end
redis.call('HSET', ck(id), 'state', 'scheduled', 'due', due)
redis.call('ZADD', k('scheduled'), due, id)
return 'scheduled'
