-- Tells a web door waiting on this call (``Prefer: wait=N``, dispatcher.http.waiting)
-- that its outcome is recorded: the id goes out on channel ``{prefix}:outcomes``, only
-- for calls enqueued with notify='1', so nobody pays for calls nobody waits on. Call it
-- in the same script that records the outcome, after the record is written. Needs
-- _calls.lua.
local function notify_outcome(id)
  if redis.call('HGET', ck(id), 'notify') == '1' then
    redis.call('PUBLISH', k('outcomes'), id)
  end
end
