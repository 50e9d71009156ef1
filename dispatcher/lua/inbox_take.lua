-- Move up to ARGV[1] inbox entries to the processing list in one step, oldest first
-- (dispatcher.bridge.Bridge).
-- KEYS[1]  the inbox list (DISPATCHER_INBOX_KEY)
-- KEYS[2]  its processing list
-- ARGV[1]  most entries moved
-- Returns the entries moved.
local inbox, processing, most = KEYS[1], KEYS[2], tonumber(ARGV[1])
local out = {}
for _ = 1, most do
  local v = redis.call('LMOVE', inbox, processing, 'RIGHT', 'LEFT')
  if not v then break end
  out[#out + 1] = v
end
return out
