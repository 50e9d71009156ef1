-- The last check before a request leaves (dispatcher.ratelimit.RateLimit.gate). The
-- sends are timed by Redis's own clock (ARGV[1] empty), so workers on several machines
-- are spaced exactly, whatever the error of their measured clock offsets
-- (dispatcher.clock); tests give a time of their own.
-- Without reports (ARGV[3] absent or 0): never two "go"s closer than the gap.
-- With reports (ARGV[3], the report timeout, > 0): the sends are spaced by when they
-- actually left, not by when they were allowed. Each sender reports when its request's
-- bytes were written (sent.lua); until then the next "go" waits. The report moves
-- send_tat, the earliest time of the next send, to max(send_tat, departure) + gap
-- (GCRA), and a "go" is given from send_tat - tolerance on. A request arrives after
-- its "go" and before its report, so any k + 1 arrivals span at least k gaps less the
-- tolerance: with a gap of 1/rate x (1 + m) and a tolerance of 2 m/rate, no sliding
-- window holding 3 or more requests at the rate ever holds one too many, whatever a
-- thread descheduled between its "go" and its bytes leaving does (it pushes the next
-- sends back instead). The tolerance lets a "go" a few ms late (a thread waking, the
-- worker's own path to the socket) cost no pace. A "go" not reported within the
-- timeout (its worker died) counts as having left then.
-- KEYS[1]  the rate limiter's hash ({p}:rate: pause_until, last_send, send_tat,
--          sent_pending)
-- ARGV[1]  now ('' : Redis's TIME)    ARGV[2]  the gap between two sends, s
-- ARGV[3]  report timeout, s (optional; absent or 0: sends are not reported)
-- ARGV[4]  tolerance, s (with reports)
-- Returns 'go' (recorded as the last send; with reports 'go <its time>', the token the
-- report names), 'paused', or the seconds to wait (string).
local key, given, gap = KEYS[1], ARGV[1], tonumber(ARGV[2])
local timeout, tol = tonumber(ARGV[3]) or 0, tonumber(ARGV[4]) or 0
local now = tonumber(given)
if given == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local r = redis.call('HMGET', key, 'pause_until', 'last_send', 'send_tat', 'sent_pending')
if (tonumber(r[1]) or 0) > now then return 'paused' end
if timeout <= 0 then
  local last = tonumber(r[2]) or 0
  if now < last + gap then return tostring(last + gap - now) end
  redis.call('HSET', key, 'last_send', now)
  return 'go'
end
local tat = tonumber(r[3]) or 0
local pending = tonumber(r[4])
if pending then
  if now < pending + timeout then
    -- The last "go" has not reported its departure. Its report normally comes a
    -- millisecond after the "go", long before the gap is over; a late one is polled
    -- for every tenth of its lateness so far (1 ms to a twentieth of the gap).
    local poll = math.min(gap / 20, math.max(0.001, (now - pending) / 10))
    return tostring(math.max(tat - tol - now, poll))
  end
  tat = math.max(tat, pending + timeout) + gap
  redis.call('HSET', key, 'send_tat', string.format('%.6f', tat))
  redis.call('HDEL', key, 'sent_pending')
end
if now < tat - tol then return tostring(tat - tol - now) end
local stamp = string.format('%.6f', now)
redis.call('HSET', key, 'last_send', stamp, 'sent_pending', stamp)
return 'go ' .. stamp
