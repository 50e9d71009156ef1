-- Record a read-back that failed (dispatcher.readback.Verifier.run): a retryable error
-- counts against the breaker and waits its backoff, like a call; a 429 waits as asked
-- (on v1 every sender pauses: the budget is shared); a permanent refusal means the CAD
-- has no read-back (v1 without the Plus plan): the verifying calls of every server go
-- back in line, a possible duplicate each, and unknown outcomes are re-sent as before
-- until ``unavailable_s`` has passed and a read-back is tried again.
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  server       ARGV[2]  gen of this read-back   ARGV[3]  now
-- ARGV[4]  'error', 'ratelimit' or 'unavailable'          ARGV[5]  the next one no sooner than
-- ARGV[6]  error text   ARGV[7]  breaker failure threshold ARGV[8]  breaker cooldown, s
-- ARGV[9]  longest cooldown, s                            ARGV[10] unavailable for, s
-- ARGV[11] '1' : a 429 pauses every sender (v1's shared budget)
-- Returns 'retry', 'paused', 'unavailable' or 'stale'.
--!include _calls.lua
--!include _circuit.lua
--!include _ratelimit.lua
--!include _verify.lua
local server, gen, now, kind = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local next_at, err = tonumber(ARGV[5]), ARGV[6]
local threshold, cooldown = tonumber(ARGV[7]), tonumber(ARGV[8])
local max_cooldown = tonumber(ARGV[9])
local unavailable_s, shared = tonumber(ARGV[10]), ARGV[11] == '1'
if redis.call('HGET', rb(server), 'gen') ~= gen then return 'stale' end
local probe = 'readback:' .. server
redis.call('HSET', rb(server), 'state', 'idle', 'lease_until', 0, 'last_at', now,
  'last_error', err)
if kind == 'unavailable' then
  if not readback_unavailable(now) then
    redis.call('HSET', k('readback'), 'since', now, 'reason', err)
    redis.call('HINCRBY', k('counters'), 'readback_unavailable', 1)
  end
  redis.call('HSET', k('readback'), 'unavailable_until', now + unavailable_s)
  redis.call('HSET', rb(server), 'next_at', 0, 'failures', 0)
  release_probe(probe)
  circuit_success(now)
  for _, s in ipairs(redis.call('SMEMBERS', k('readback:servers'))) do
    verifying_fallback(s, now, "the CAD's list cannot be read; sent again")
  end
  return 'unavailable'
end
redis.call('HSET', rb(server), 'next_at', next_at)
redis.call('HINCRBY', k('counters'), 'readback_failures', 1)
if kind == 'ratelimit' then
  if shared then rate_pause(next_at) end
  release_probe(probe)
  circuit_success(now)
  return 'paused'
end
redis.call('HINCRBY', rb(server), 'failures', 1)
circuit_failure(probe, now, err, threshold, cooldown, max_cooldown)
release_probe(probe)
return 'retry'
