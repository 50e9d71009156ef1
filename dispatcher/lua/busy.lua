-- Which communities have calls in play (dispatcher.schedule.busy): one EXISTS over each
-- community's five places, all in one script, so the scheduler's check each tick costs
-- one round trip and a short answer however many communities are configured.
-- KEYS     five per community, in order: held, queued, scheduled, inflight, verifying
-- Returns one 1 (calls in play) or 0 per community, in KEYS' order.
local out = {}
for i = 1, #KEYS, 5 do
  local n = redis.call('EXISTS', KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], KEYS[i + 4])
  table.insert(out, n > 0 and 1 or 0)
end
return out
