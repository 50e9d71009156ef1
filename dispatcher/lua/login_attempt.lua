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
--!include _lockout.lua
local attempts_key, lock_key, strikes_key = KEYS[1], KEYS[2], KEYS[3]
local allowed, window, first_lock = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_lock, strikes_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local left = redis.call('TTL', lock_key)
if left > 0 then return left end
local attempts = redis.call('INCR', attempts_key)
if attempts == 1 then redis.call('EXPIRE', attempts_key, window) end
if attempts <= allowed then return 0 end
return lock_out(attempts_key, lock_key, strikes_key, first_lock, max_lock, strikes_ttl)
