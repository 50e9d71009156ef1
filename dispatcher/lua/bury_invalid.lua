-- Record an inbox entry that is not a valid call as a dead letter ``invalid``, raw text
-- kept; beyond the cap the oldest are summarised, never silently: counted, their times
-- and hashes kept, their records dropped (dispatcher.deadletters.DeadLetters.bury_invalid).
-- KEYS[1]  key prefix (see _calls.lua; the summary walks the oldest invalid entries)
-- KEYS[2]  inbox processing list the entry is taken from ('' : not from the inbox)
-- ARGV[1]  new call id  ARGV[2]  now           ARGV[3]  raw text (capped)
-- ARGV[4]  error text   ARGV[5]  source        ARGV[6]  the entry to remove from KEYS[2]
-- ARGV[7]  raw text's SHA-256                  ARGV[8]  cap (DISPATCHER_MAX_INVALID)
-- ARGV[9]  summarised hashes kept
-- Returns {id, summarised now, summarised in all} or '' when the entry was gone.
--!include _calls.lua
local id, now, raw, err, source = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local inbox, entry, sha = KEYS[2], ARGV[6], ARGV[7]
local cap, hashes_keep = tonumber(ARGV[8]), tonumber(ARGV[9])
if inbox ~= '' then
  if redis.call('LREM', inbox, 1, entry) == 0 then return '' end
end
redis.call('HSET', ck(id), 'id', id, 'call', '{}', 'raw', raw, 'state', 'dead',
  'reason', 'invalid', 'last_error', err, 'enqueued_at', now, 'dead_at', now,
  'attempts', 0, 'source', source, 'updated_at', now, 'raw_sha256', sha)
redis.call('ZADD', k('dead'), now, id)
redis.call('ZADD', k('invalid'), now, id)
redis.call('HINCRBY', k('counters'), 'dead:invalid', 1)
local summarised, total = 0, 0
local over = redis.call('ZCARD', k('invalid')) - cap
if over > 0 then
  local sum = k('invalid:summary')
  for _, old in ipairs(redis.call('ZRANGE', k('invalid'), 0, over - 1)) do
    local r = redis.call('HMGET', ck(old), 'state', 'dead_at', 'raw_sha256')
    redis.call('ZREM', k('invalid'), old)
    if r[1] == 'dead' then
      forget(old)
      redis.call('ZREM', k('dead'), old)
      local at = tonumber(r[2]) or now
      local first = tonumber(redis.call('HGET', sum, 'oldest_at'))
      if not first or at < first then redis.call('HSET', sum, 'oldest_at', r[2] or now) end
      local last = tonumber(redis.call('HGET', sum, 'newest_at'))
      if not last or at > last then redis.call('HSET', sum, 'newest_at', r[2] or now) end
      redis.call('LPUSH', k('invalid:hashes'), r[3] or '')
      summarised = summarised + 1
    end
  end
  if summarised > 0 then
    redis.call('LTRIM', k('invalid:hashes'), 0, hashes_keep - 1)
    total = redis.call('HINCRBY', k('counters'), 'invalid_summarised', summarised)
  end
end
return {id, tostring(summarised), tostring(total)}
