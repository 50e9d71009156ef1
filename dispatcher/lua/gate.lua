-- The last check before a request leaves (dispatcher.ratelimit.RateLimit.gate): never
-- two sends closer than the interval, measured on the sends themselves (a thread may
-- wake late from its slot wait). The sends are timed by Redis's own clock (ARGV[1]
-- empty), so workers on several machines are spaced exactly, whatever the error of
-- their measured clock offsets (dispatcher.clock); tests give a time of their own.
-- KEYS[1]  the rate limiter's hash ({p}:rate: pause_until, last_send)
-- ARGV[1]  now ('' : Redis's TIME)    ARGV[2]  least time between two sends, s
-- Returns 'go' (recorded as the last send), 'paused', or the seconds to wait (string).
local key, given, gap = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = tonumber(given)
if given == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local r = redis.call('HMGET', key, 'pause_until', 'last_send')
if (tonumber(r[1]) or 0) > now then return 'paused' end
local last = tonumber(r[2]) or 0
if now < last + gap then return tostring(last + gap - now) end
redis.call('HSET', key, 'last_send', now)
return 'go'
