-- Delete a dead letter for good (dispatcher.deadletters.DeadLetters.purge).
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id
-- Returns 1 when purged, 0 when it was not a dead letter.
--!include _calls.lua
local id = ARGV[1]
if redis.call('HGET', ck(id), 'state') ~= 'dead' then return 0 end
forget(id)
redis.call('ZREM', k('dead'), id)
redis.call('ZREM', k('invalid'), id)
redis.call('HINCRBY', k('counters'), 'purged', 1)
return 1
