-- With DISPATCHER_MAX_AGE_S set, held or scheduled calls too old become dead letters
-- ``expired``, one page of ``pending`` per run (dispatcher.schedule.Pump.tick, step 5).
-- KEYS[1]  key prefix (see _calls.lua; walks up to ARGV[3] calls)
-- ARGV[1]  now          ARGV[2]  max age, s      ARGV[3]  page size
-- ARGV[4]  score the page starts after ('' : from the oldest)
-- Returns {expired, entries in the page, the page's last score ('' : empty)}.
--!include _calls.lua
local now, max_age, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local after = ARGV[4]
local n = 0
-- pending is ordered by enqueue time; a replayed call counts its age from the replay,
-- so old replayed calls can fill a page without expiring: the caller pages through,
-- each page starting after the last score of the one before.
local from = '-inf'
if after ~= '' then from = '(' .. after end
local page = redis.call('ZRANGEBYSCORE', k('pending'), from, now - max_age, 'WITHSCORES',
  'LIMIT', 0, limit)
local last = ''
for i = 1, #page, 2 do
  local id = page[i]
  last = page[i + 1]
  local r = redis.call('HMGET', ck(id), 'state', 'age_from')
  if (r[1] == 'held' or r[1] == 'scheduled') and now - num(r[2], now) > max_age then
    bury(id, now, 'expired', '', '', 'older than DISPATCHER_MAX_AGE_S before it could be sent')
    n = n + 1
  end
end
return {n, #page / 2, last}
