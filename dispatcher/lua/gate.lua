-- The last check before a request leaves (dispatcher.ratelimit.RateLimit.gate): never
-- two sends closer than the interval, measured on the sends themselves (a thread may
-- wake late from its slot wait).
-- KEYS[1]  the rate limiter's hash ({p}:rate: pause_until, last_send)
-- ARGV[1]  now                     ARGV[2]  least time between two sends, s
-- Returns 'go' (recorded as the last send), 'paused', or the seconds to wait (string).
local key, now, gap = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local r = redis.call('HMGET', key, 'pause_until', 'last_send')
if (tonumber(r[1]) or 0) > now then return 'paused' end
local last = tonumber(r[2]) or 0
if now < last + gap then return tostring(last + gap - now) end
redis.call('HSET', key, 'last_send', now)
return 'go'
