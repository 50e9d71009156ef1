-- One failed operator login from one client address (dispatcher.throttle.LoginThrottle).
-- KEYS[1]  failures in the current window (string counter; expires with the window)
-- KEYS[2]  lock-out (string; its TTL is the time left)
-- KEYS[3]  strikes: lock-outs so far (string counter; forgotten after ARGV[5] s)
-- ARGV[1]  failures allowed per window
-- ARGV[2]  window, seconds
-- ARGV[3]  first lock-out, seconds (doubles with each strike)
-- ARGV[4]  longest lock-out, seconds
-- ARGV[5]  how long strikes are remembered, seconds
-- Returns the lock-out now in force, in seconds (0: not locked).
local fails_key, lock_key, strikes_key = KEYS[1], KEYS[2], KEYS[3]
local allowed, window, first_lock = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_lock, strikes_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local fails = redis.call('INCR', fails_key)
if fails == 1 then redis.call('EXPIRE', fails_key, window) end
if fails < allowed then return 0 end
redis.call('DEL', fails_key)
local strikes = redis.call('INCR', strikes_key)
redis.call('EXPIRE', strikes_key, strikes_ttl)
local lock = first_lock * 2 ^ math.min(strikes - 1, 30)
lock = math.floor(math.min(lock, max_lock))
redis.call('SET', lock_key, strikes, 'EX', lock)
return lock
