-- One failed operator login from one client address (dispatcher.http.throttle.LoginThrottle).
-- KEYS[1]  failures in the current window (string counter; expires with the window)
-- KEYS[2]  lock-out (string; its TTL is the time left)
-- KEYS[3]  strikes: lock-outs so far (string counter; forgotten after ARGV[5] s)
-- ARGV[1]  failures allowed per window
-- ARGV[2]  window, seconds
-- ARGV[3]  first lock-out, seconds (doubles with each strike)
-- ARGV[4]  longest lock-out, seconds
-- ARGV[5]  how long strikes are remembered, seconds
-- Returns the lock-out now in force, in seconds (0: not locked).
local fails = redis.call('INCR', KEYS[1])
if fails == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
if fails < tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
local strikes = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5]))
local lock = tonumber(ARGV[3]) * 2 ^ math.min(strikes - 1, 30)
lock = math.floor(math.min(lock, tonumber(ARGV[4])))
redis.call('SET', KEYS[2], strikes, 'EX', lock)
return lock
