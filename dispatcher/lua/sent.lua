-- A request's bytes have left (dispatcher.ratelimit.RateLimit.sent): the send gate's
-- next send is due one gap after this departure, or after the last one's due time if
-- later (send_tat, see gate.lua), and the gate waits no longer for this report.
-- KEYS[1]  the rate limiter's hash ({p}:rate: send_tat, sent_pending)
-- ARGV[1]  now ('' : Redis's TIME; the report comes after the bytes left, so this is
--          at or after the departure)
-- ARGV[2]  the "go" reported on (its time as gate.lua returned it)
-- ARGV[3]  the gap between two sends, s
-- Returns how long after its "go" the request left, s (string). A report of an older
-- "go" (its wait timed out) still pushes send_tat on.
local key, given, stamp, gap = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = tonumber(given)
if given == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local r = redis.call('HMGET', key, 'send_tat', 'sent_pending')
local tat = tonumber(r[1]) or 0
if r[2] == stamp then
  redis.call('HDEL', key, 'sent_pending')
  tat = math.max(tat, now) + gap
elseif now + gap > tat then
  tat = now + gap
end
redis.call('HSET', key, 'send_tat', string.format('%.6f', tat))
return tostring(now - tonumber(stamp))
