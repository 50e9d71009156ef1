-- A login attempt whose token was wrong (dispatcher.http.throttle.LoginThrottle.failed). The
-- attempt was already counted by login_attempt.lua; this only locks the address out at
-- once when that was the last attempt the window allows, so its next try gets 429.
-- KEYS[1]  attempts in the current window (string counter, see login_attempt.lua)
-- KEYS[2]  lock-out (string; its TTL is the time left)
-- KEYS[3]  strikes: lock-outs so far (string counter; forgotten after ARGV[5] s)
-- ARGV[1]  attempts allowed per window
-- ARGV[2]  window, seconds (unused here; the same arguments as login_attempt.lua)
-- ARGV[3]  first lock-out, seconds (doubles with each strike)
-- ARGV[4]  longest lock-out, seconds
-- ARGV[5]  how long strikes are remembered, seconds
-- Returns the lock-out now in force, in seconds (0: not locked).
--!include _lockout.lua
local fails_key, lock_key, strikes_key = KEYS[1], KEYS[2], KEYS[3]
local allowed, first_lock = tonumber(ARGV[1]), tonumber(ARGV[3])
local max_lock, strikes_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local left = redis.call('TTL', lock_key)
if left > 0 then return left end
local attempts = tonumber(redis.call('GET', fails_key) or '0')
if attempts < allowed then return 0 end
return lock_out(fails_key, lock_key, strikes_key, first_lock, max_lock, strikes_ttl)
