-- Put a dead letter back in line, oldest first (dispatcher.deadletters.DeadLetters.replay).
-- A removal's dead letter (kind 'removal') retries the removal, never the call.
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id      ARGV[2]  now
-- Returns 'replayed', 'missing', 'not_dead' or 'unreplayable' (an invalid entry).
--!include _calls.lua
local id, now = ARGV[1], tonumber(ARGV[2])
local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at', 'reason', 'call')
if not r[1] then return 'missing' end
if r[1] ~= 'dead' then return 'not_dead' end
if not r[4] or r[4] == '' or r[4] == '{}' then return 'unreplayable' end
redis.call('ZREM', k('dead'), id)
redis.call('HINCRBY', ck(id), 'replays', 1)
redis.call('HSET', ck(id), 'last_reason', r[3] or '', 'reason', '', 'age_from', now,
  'replayed_at', now, 'failures', 0)
if redis.call('HGET', ck(id), 'op') ~= 'remove' then
  redis.call('ZADD', k('pending'), tonumber(r[2]), id)
end
redis.call('HINCRBY', k('counters'), 'replayed', 1)
hold(id, tonumber(r[2]), now)
return 'replayed'
