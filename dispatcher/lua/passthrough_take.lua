-- One passed-through request's share of a CAD budget (dispatcher.http.cadbudget): a
-- sliding window per (hash of the client's key, endpoint) and, for a v1 request made
-- with our own key, a free slot of the shared rate limiter (never one a call of ours
-- waits for: a call reserves its slot when it is queued, which moves ``tat`` ahead).
-- KEYS[1]  the window (zset: request ids by time); expires a second after the window
-- KEYS[2]  the shared rate limiter's hash ({p}:rate: tat, pause_until)
-- ARGV[1]  now, s                     ARGV[2]  the window, s
-- ARGV[3]  allowance: requests in the window (0: none)
-- ARGV[4]  a member unique to this request
-- ARGV[5]  the rate limiter's interval, s, to take a slot of; 0: take none
-- ARGV[6]  1: the request shares the rate limiter (v1, our key): it waits behind queued
--          calls (tat) and a 429 pause; 0: it does not
-- Returns {1, '0'} to go, {0, '<seconds to wait>'} to refuse (nothing recorded).
local window_key, limiter = KEYS[1], KEYS[2]
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local allowance, member, interval = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local shares = ARGV[6] == '1'
if shares then
  local r = redis.call('HMGET', limiter, 'tat', 'pause_until')
  local busy = tonumber(r[2]) or 0
  if interval > 0 then busy = math.max(tonumber(r[1]) or 0, busy) end
  if busy > now then return {0, tostring(busy - now)} end
end
redis.call('ZREMRANGEBYSCORE', window_key, '-inf', now - window)
if redis.call('ZCARD', window_key) >= allowance then
  local oldest = redis.call('ZRANGE', window_key, 0, 0, 'WITHSCORES')
  local wait = window
  if #oldest > 0 then wait = tonumber(oldest[2]) + window - now end
  return {0, tostring(wait)}
end
redis.call('ZADD', window_key, now, member)
redis.call('PEXPIRE', window_key, math.ceil(window * 1000) + 1000)
if shares and interval > 0 then redis.call('HSET', limiter, 'tat', now + interval) end
return {1, '0'}
