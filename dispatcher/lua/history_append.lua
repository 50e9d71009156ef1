-- Push one sample of the page's chart unless the newest is younger than the minimum
-- gap, so several schedulers make one series (dispatcher.history.History.append).
-- KEYS[1]  the sample list ({p}:history)
-- ARGV[1]  the sample (JSON with ``t``)       ARGV[2]  its time
-- ARGV[3]  least gap between samples, s       ARGV[4]  samples kept
-- Returns 1 when pushed, 0 when another process just did.
local key, sample, t = KEYS[1], ARGV[1], tonumber(ARGV[2])
local min_gap, keep = tonumber(ARGV[3]), tonumber(ARGV[4])
local head = redis.call('LINDEX', key, 0)
if head then
  local ok, last = pcall(cjson.decode, head)
  if ok and type(last) == 'table' and tonumber(last.t) and t - tonumber(last.t) < min_gap then
    return 0
  end
end
redis.call('LPUSH', key, sample)
redis.call('LTRIM', key, 0, keep - 1)
return 1
