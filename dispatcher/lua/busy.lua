-- Which communities have calls in play (dispatcher.schedule.busy): one EXISTS over each
-- community's five places, all in one script, so the scheduler's check each tick costs
-- one round trip and a short answer however many communities are configured.
-- KEYS[1..5], KEYS[6..10], ...: five per community, in order: held, queued, scheduled,
--          inflight, verifying
-- Returns one 1 (calls in play) or 0 per community, in KEYS' order.
local places = KEYS
local out = {}
for i = 1, #places, 5 do
  local n = redis.call('EXISTS', places[i], places[i + 1], places[i + 2], places[i + 3],
    places[i + 4])
  table.insert(out, n > 0 and 1 or 0)
end
return out
