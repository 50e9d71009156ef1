-- The shared circuit breaker, hash {p}:circuit (dispatcher.circuit): state
-- (closed/open/half_open), failures, cooldown, open_until, probe, probe_until, flush,
-- opened_at, last_success_at, last_failure_at, last_error. Needs _calls.lua.

-- Is the breaker holding every call back (open or half open)?
local function circuit_blocks()
  local st = redis.call('HGET', k('circuit'), 'state')
  return st == 'open' or st == 'half_open'
end

-- May call ``id`` be sent now? Closed admits; open holds until its cooldown ends, then
-- admits one probe (this call, which becomes the probe). Returns the state before.
local function circuit_admit(id, now, probe_lease)
  local c = redis.call('HMGET', k('circuit'), 'state', 'open_until', 'probe', 'probe_until')
  local st = c[1] or 'closed'
  if st ~= 'closed' then
    if (st == 'open' and now < num(c[2], 0)) or
       (st == 'half_open' and c[3] ~= id and num(c[4], 0) > now) then
      return false, st
    end
    redis.call('HSET', k('circuit'), 'state', 'half_open', 'probe', id,
      'probe_until', now + probe_lease)
  end
  return true, st
end

-- May the schedule release one probe (the cooldown over, or a probe's lease ran out)?
local function circuit_probe_due(now)
  local c = redis.call('HMGET', k('circuit'), 'state', 'open_until', 'probe_until')
  return (c[1] == 'open' and now >= num(c[2], 0)) or
    (c[1] == 'half_open' and num(c[3], 0) <= now)
end

local function release_probe(id)
  if redis.call('HGET', k('circuit'), 'probe') == id then
    redis.call('HSET', k('circuit'), 'probe', '', 'probe_until', 0)
  end
end

local function circuit_success(now)
  local st = redis.call('HGET', k('circuit'), 'state')
  if st and st ~= 'closed' then
    -- The CAD is back: calls waiting on their own backoff go back in line, oldest first.
    redis.call('HSET', k('circuit'), 'flush', 1)
    redis.call('HINCRBY', k('counters'), 'circuit_closed', 1)
  end
  redis.call('HSET', k('circuit'), 'state', 'closed', 'failures', 0, 'cooldown', 0,
    'probe', '', 'probe_until', 0, 'last_success_at', now)
end

local function circuit_failure(id, now, err, threshold, cooldown0, maxcool)
  local c = redis.call('HMGET', k('circuit'), 'state', 'cooldown', 'probe')
  local st = c[1] or 'closed'
  local f = redis.call('HINCRBY', k('circuit'), 'failures', 1)
  redis.call('HSET', k('circuit'), 'last_failure_at', now, 'last_error', err)
  -- Only the probe's failure re-opens a half-open breaker: a call sent before the
  -- breaker opened may fail late and must not cut the probe short.
  if (st == 'half_open' and c[3] == id) or (st == 'closed' and f >= threshold) then
    local cd = cooldown0
    if st == 'half_open' then cd = math.min(math.max(num(c[2], 0) * 2, cooldown0), maxcool) end
    redis.call('HSET', k('circuit'), 'state', 'open', 'open_until', now + cd, 'cooldown', cd,
      'probe', '', 'probe_until', 0, 'opened_at', now)
    redis.call('HINCRBY', k('counters'), 'circuit_opened', 1)
  end
end

-- Has the breaker closed since calls went on backoff (they go back in line)?
local function circuit_flush_due()
  local c = redis.call('HMGET', k('circuit'), 'state', 'flush')
  return c[1] == 'closed' and c[2] == '1'
end

local function circuit_flush_done()
  redis.call('HDEL', k('circuit'), 'flush')
end

local function circuit_is_open()
  return redis.call('HGET', k('circuit'), 'state') == 'open'
end
