"""Redis key names, and the Lua helpers every state-changing script shares.

Layout (prefix ``dispatcher`` by default):

    {p}:call:{id}     hash  the call record: payload, state, attempts, outcome
    {p}:idem:{key}    str   idempotency key -> call id (expires, see IDEMPOTENCY_TTL_S)
    {p}:pending       zset  every call not yet delivered or dead, by enqueue time
    {p}:held          zset  calls waiting for capacity, by enqueue time (oldest first)
    {p}:queued        zset  calls with a Celery message out, by publish time
    {p}:scheduled     zset  calls waiting to retry, by due time
    {p}:inflight      zset  calls a worker is sending, by lease expiry
    {p}:dead          zset  dead letters, by time of death
    {p}:invalid       zset  the dead letters ``invalid`` (inbox entries), by time of death
    {p}:invalid:summary  hash  invalid entries summarised beyond DISPATCHER_MAX_INVALID:
                      oldest_at, newest_at (the count is counters' invalid_summarised)
    {p}:invalid:hashes   list  SHA-256 of the newest summarised invalid entries (capped)
    {p}:circuit       hash  the shared circuit breaker
    {p}:rate          hash  the shared rate limiter (next slot, 429 pause)
    {p}:counters      hash  monotonic counters (survive restarts, shared by processes)
    {p}:audit         list  operator actions on dead letters (replay, purge)
    {p}:rate:granted  zset  send times granted by the rate limiter (recent only)
    {p}:latency       hash  CAD request latency histogram (dispatcher.telemetry)
    {p}:heartbeats    hash  worker -> last heartbeat (dispatcher.heartbeat)
    {p}:history       list  one sample per 10 s for the page's chart (dispatcher.history)

A call is in exactly one of held/queued/scheduled/inflight/dead (or delivered, in
none). Every transition is one Lua script, so a crash leaves each call in one place.
Redis Cluster is not supported: the scripts touch several keys at once.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How long an idempotency key maps to its call id (a day, like Stripe's keys).
IDEMPOTENCY_TTL_S = 24 * 3600
#: How long a delivered call's record is kept for `dispatcher status` (a week).
DELIVERED_TTL_S = 7 * 24 * 3600

ZSETS = ("held", "queued", "scheduled", "inflight", "pending", "dead")


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "dispatcher"

    def call(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}"

    def idem(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def __getattr__(self, name: str) -> str:
        if name in ZSETS or name in ("circuit", "rate", "counters", "audit", "heartbeats",
                                     "history", "invalid"):
            return f"{self.prefix}:{name}"
        raise AttributeError(name)


# Shared Lua, prepended to every script. ARGV[1] is always the key prefix. Numbers that
# go back to Python are returned as strings: Redis truncates Lua numbers to integers.
LUA_COMMON = r"""
local P = ARGV[1]
local function k(name) return P .. ':' .. name end
local function ck(id) return P .. ':call:' .. id end
local function num(v, d) if v then return tonumber(v) or d end return d end

local function hold(id, enq, now)
  redis.call('HSET', ck(id), 'state', 'held', 'updated_at', now)
  redis.call('ZADD', k('held'), enq, id)
end

local function unplace(id)
  for _, z in ipairs({'held', 'queued', 'scheduled', 'inflight', 'pending', 'dead'}) do
    redis.call('ZREM', k(z), id)
  end
end

local function bury(id, now, reason, status, response, err)
  unplace(id)
  redis.call('HSET', ck(id), 'state', 'dead', 'reason', reason, 'status_code', status,
    'response', response, 'last_error', err, 'dead_at', now, 'updated_at', now)
  redis.call('ZADD', k('dead'), now, id)
  redis.call('HINCRBY', k('counters'), 'dead:' .. reason, 1)
end

-- One CAD request's duration into the latency histogram (dispatcher.telemetry).
local function observe(outcome, bucket, seconds)
  if not bucket or bucket == '' then return end
  local key = k('latency')
  redis.call('HINCRBY', key, outcome .. ':' .. bucket, 1)
  redis.call('HINCRBY', key, outcome .. ':count', 1)
  redis.call('HINCRBYFLOAT', key, outcome .. ':sum', seconds)
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
-- within the longest slot wait (bounded by the window of messages out at once); none
-- while the breaker is not closed or a 429 pause runs.
local function capacity(now, interval, max_wait, window)
  local st = redis.call('HGET', k('circuit'), 'state')
  if st == 'open' or st == 'half_open' then return 0 end
  local rate = redis.call('HMGET', k('rate'), 'tat', 'pause_until')
  if num(rate[2], 0) > now then return 0 end
  local c = window - redis.call('ZCARD', k('queued'))
  if interval > 0 then
    local tat = math.max(num(rate[1], 0), now)
    c = math.min(c, math.floor((now + max_wait - tat) / interval) + 1)
  end
  if c < 0 then return 0 end
  return c
end
"""
