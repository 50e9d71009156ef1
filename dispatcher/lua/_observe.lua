-- One CAD request's duration into the latency histogram hash ``key``
-- (dispatcher.telemetry); nothing when ``bucket`` is empty.
local function observe(key, outcome, bucket, seconds)
  if not bucket or bucket == '' then return end
  redis.call('HINCRBY', key, outcome .. ':' .. bucket, 1)
  redis.call('HINCRBY', key, outcome .. ':count', 1)
  redis.call('HINCRBYFLOAT', key, outcome .. ':sum', seconds)
end
