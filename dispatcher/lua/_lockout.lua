-- The login lock-out shared by login_attempt.lua and login_failure.lua
-- (dispatcher.http.throttle): forget the window's attempts, count one more strike, and
-- lock the address for first_lock seconds doubled per earlier strike (at most max_lock).
-- Returns the lock-out, in seconds.
local function lock_out(attempts_key, lock_key, strikes_key, first_lock, max_lock, strikes_ttl)
  redis.call('DEL', attempts_key)
  local strikes = redis.call('INCR', strikes_key)
  redis.call('EXPIRE', strikes_key, strikes_ttl)
  local lock = math.floor(math.min(first_lock * 2 ^ math.min(strikes - 1, 30), max_lock))
  redis.call('SET', lock_key, strikes, 'EX', lock)
  return lock
end
