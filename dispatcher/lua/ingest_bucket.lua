-- One ingest request from one source address (dispatcher.http.throttle.IngestRate): a token
-- bucket, refilled at ARGV[1] tokens per second up to ARGV[2], timed by Redis' own clock
-- so that web processes on several machines share one bucket.
-- KEYS[1]  the bucket (hash: tokens, at); expires once it would be full again
-- ARGV[1]  rate, tokens per second (> 0)
-- ARGV[2]  capacity (the burst allowed), tokens (>= 1)
-- Returns {1, 0} when the request may pass, {0, ms} when it must wait ms milliseconds.
local key, rate, burst = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(h[1]) or burst
local at = tonumber(h[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
if allowed == 1 then return {1, 0} end
return {0, math.ceil((1 - tokens) / rate * 1000)}
