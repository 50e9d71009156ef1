-- The shared rate limiter (dispatcher.ratelimit): hash {p}:rate (tat, pause_until,
-- last_send) and zset {p}:rate:granted (send times granted, recent only).
-- Needs _calls.lua and _circuit.lua.

local function rate_paused(now)
  return num(redis.call('HGET', k('rate'), 'pause_until'), 0) > now
end

-- A 429: every sender pauses until ``until`` (a pause already longer stays).
local function rate_pause(until_t)
  if until_t > num(redis.call('HGET', k('rate'), 'pause_until'), 0) then
    redis.call('HSET', k('rate'), 'pause_until', until_t)
  end
end

-- Reserve the next slot of the shared rate limiter (GCRA: "tat" is the theoretical
-- arrival time of the next request). Slots are handed out when a call is given its
-- message, in line order, so calls reach the CAD in that order and never closer
-- together than the interval, however the worker threads race to claim them.
local function reserve_slot(now, interval)
  local rate = redis.call('HMGET', k('rate'), 'tat', 'pause_until')
  local start = math.max(num(rate[1], 0), now, num(rate[2], 0))
  if interval > 0 then redis.call('HSET', k('rate'), 'tat', start + interval) end
  return start
end

-- How many more calls may be given a Celery message now: the rate limiter's free slots
-- within the lookahead ``ahead`` (RELEASE_AHEAD_S; bounded by the window of messages out
-- at once); none while the breaker is not closed or a 429 pause runs.
local function capacity(now, interval, ahead, window)
  if circuit_blocks() then return 0 end
  local rate = redis.call('HMGET', k('rate'), 'tat', 'pause_until')
  if num(rate[2], 0) > now then return 0 end
  local c = window - redis.call('ZCARD', k('queued'))
  if interval > 0 then
    local tat = math.max(num(rate[1], 0), now)
    c = math.min(c, math.floor((now + ahead - tat) / interval) + 1)
  end
  if c < 0 then return 0 end
  return c
end

-- Messages that waited long past their slots (workers busy, restarting or reconnecting
-- to Redis) would otherwise reach the CAD in whatever order the threads happen to claim
-- them. The first such claim gives every call still in line, itself included, fresh
-- slots in line order after the last granted send; the others then find their turn.
-- A call whose fresh slot would be further away than a worker may wait goes back to
-- `held` (its message will find it stale), so no slot is reserved that nobody can use.
local function reslot(id, slot, now, interval, max_wait)
  local line = {{slot, id, now}}
  for _, other in ipairs(redis.call('ZRANGE', k('queued'), 0, -1)) do
    local o = redis.call('HMGET', ck(other), 'slot', 'enqueued_at')
    if o[1] then table.insert(line, {num(o[1], 0), other, num(o[2], now)}) end
  end
  table.sort(line, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local base = math.max(now, num(redis.call('HGET', k('rate'), 'pause_until'), 0))
  local last = redis.call('ZRANGE', k('rate:granted'), -1, -1, 'WITHSCORES')
  if #last > 0 then base = math.max(base, tonumber(last[2]) + interval) end
  local mine, used = base, 0
  for i, entry in ipairs(line) do
    local s = base + (i - 1) * interval
    if s - now <= max_wait then used = i end
    if entry[2] == id then
      mine = s  -- beyond the wait, the claim holds it
    elseif s - now <= max_wait then
      redis.call('HSET', ck(entry[2]), 'slot', s)
    else
      redis.call('ZREM', k('queued'), entry[2])
      hold(entry[2], entry[3], now)
    end
  end
  redis.call('HSET', k('rate'), 'tat', base + used * interval)
  redis.call('HINCRBY', k('counters'), 'reslotted', 1)
  return mine
end

-- When claimed call ``id`` (given ``slot`` at release, 0: none) may start. The slot
-- keeps the line's order; the calendar of granted starts keeps every two grants at
-- least the limit apart (the send gate spaces the actual sends by the full interval),
-- so a claim that comes late (a busy worker) takes the nearest free time instead of
-- crowding a neighbour: it goes behind the calls granted meanwhile. A start within
-- ``max_wait`` is recorded in the calendar. ``reslot_ok``: false for the breaker's
-- probe (the rest of the line waits for the breaker).
local function rate_grant(id, slot, now, interval, max_wait, limit_gap, stale_s, reslot_ok)
  if interval <= 0 then return now end
  if slot <= 0 then slot = reserve_slot(now, interval)
  elseif reslot_ok and slot < now - math.max(interval, stale_s) then
    slot = reslot(id, slot, now, interval, max_wait)
  end
  local start = math.max(slot, now)
  local cal = k('rate:granted')
  redis.call('ZREMRANGEBYSCORE', cal, '-inf', now - interval)
  -- Two grants conflict only when closer than the limit itself (1/DISPATCHER_MAX_RATE,
  -- less a millisecond for float rounding), and a conflicting grant moves to the limit
  -- after its neighbour, not a whole interval: the interval's margin above the limit
  -- absorbs a claim that comes a few ms after its slot (the first call of a backlog
  -- always does) within a few grants, and the send gate spaces the actual sends,
  -- instead of the late grant pushing every later grant a whole interval on, until one
  -- is held and its slot goes unused.
  local gap = limit_gap - math.min(0.001, limit_gap / 2)
  for _ = 1, 1000 do
    local hit = redis.call('ZRANGEBYSCORE', cal, '(' .. (start - gap), '(' .. (start + gap),
      'WITHSCORES', 'LIMIT', 0, 1)
    if #hit == 0 then break end
    start = tonumber(hit[2]) + limit_gap
  end
  if start - now <= max_wait then redis.call('ZADD', cal, start, id) end
  return start
end
