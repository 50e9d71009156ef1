-- Take a call back (dispatcher.takeback.remove_call). Not yet sent (held, queued,
-- scheduled, or a dead letter): cancelled at once; a message already out finds it gone.
-- Being sent, or its outcome unknown (verifying): taken back once the outcome is known
-- (delivered: removed from the CAD; not created: cancelled). Delivered: removed from the
-- CAD by a worker, through the line like a call (`removing`, then `removed`).
-- KEYS[1]  key prefix (see _calls.lua)
-- ARGV[1]  call id      ARGV[2]  now      ARGV[3]  record TTL once it is over, s
-- Returns 'cancelled', 'pending' (after the send's outcome), 'removing', 'removed',
-- 'missing' or 'invalid' (an inbox entry that never was a call).
--!include _calls.lua
local id, now, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local r = redis.call('HMGET', ck(id), 'state', 'op', 'call')
local st = r[1]
if not st then return 'missing' end
redis.call('HSET', ck(id), 'record_ttl', ttl)
if st == 'cancelled' or st == 'removed' then return st end
if r[2] == 'remove' then return 'removing' end
if st == 'dead' and (not r[3] or r[3] == '' or r[3] == '{}') then return 'invalid' end
if st == 'held' or st == 'queued' or st == 'scheduled' or st == 'dead' then
  cancel(id, now, 'taken back before it was sent')
  return 'cancelled'
end
if st == 'sending' or st == 'verifying' then
  redis.call('HSET', ck(id), 'remove_requested', '1', 'updated_at', now)
  return 'pending'
end
if st == 'delivered' then
  start_removal(id, now)
  return 'removing'
end
return st
