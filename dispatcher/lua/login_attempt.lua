-- One operator login attempt from one client address, before its token is compared
-- (dispatcher.http.throttle.LoginThrottle.check). Counting the attempt here, in the same step
-- as the lock-out check, lets no more than ARGV[1] tokens be compared per window, however
-- many requests arrive at once.
-- KEYS[1]  attempts not yet forgiven in the current window (string counter; expires
--          with the window; a successful login deletes it)
-- KEYS[2]  lock-out (string; its TTL is the time left)
-- KEYS[3]  strikes: lock-outs so far (string counter; forgotten after ARGV[5] s)
-- ARGV[1]  attempts allowed per window
-- ARGV[2]  window, seconds
-- ARGV[3]  first lock-out, seconds (doubles with each strike)
-- ARGV[4]  longest lock-out, seconds
-- ARGV[5]  how long strikes are remembered, seconds
-- Returns the lock-out in force, in seconds (0: this attempt may compare its token).
local allowed, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local first_lock, max_lock, strikes_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local left = redis.call('TTL', KEYS[2])
if left > 0 then return left end
local attempts = redis.call('INCR', KEYS[1])
if attempts == 1 then redis.call('EXPIRE', KEYS[1], window) end
if attempts <= allowed then return 0 end
redis.call('DEL', KEYS[1])
local strikes = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], strikes_ttl)
local lock = math.floor(math.min(first_lock * 2 ^ math.min(strikes - 1, 30), max_lock))
redis.call('SET', KEYS[2], strikes, 'EX', lock)
return lock
