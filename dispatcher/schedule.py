"""The schedule: moves waiting calls back into play, oldest first, at the pace allowed.

One `Pump.tick` does, each step one atomic script over a bounded batch:

1. due retries (``scheduled`` by due time) go back in line (``held``, by enqueue time);
2. calls whose worker died mid-send (lease expired in ``inflight``) go back in line;
3. calls whose message was lost (``queued`` longer than DISPATCHER_ORPHAN_AFTER_S) go back
   in line;
4. after the breaker closes, every call still on backoff goes back in line;
5. with DISPATCHER_MAX_AGE_S set, calls too old become dead letters ``expired``;
6. the oldest held calls get a Celery message, as many as the breaker and the rate
   limiter can take within the next slot wait (one probe when the breaker may test).

Any number of pumps may run at once (each script re-checks state), so a crashed or
duplicated scheduler process is harmless. Waiting calls cost only Redis memory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from dispatcher.broker import Publisher
from dispatcher.keys import LUA_COMMON, Keys
from dispatcher.lifecycle import Flow, as_text
from dispatcher.policy import CircuitPolicy
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

#: Most calls one script moves per tick, so no script blocks Redis for long.
BATCH = 1000
#: How often the scheduler process ticks.
TICK_S = 0.1

_PROMOTE = LUA_COMMON + r"""
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', k('scheduled'), '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('scheduled'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
  if r[1] == 'scheduled' then hold(id, tonumber(r[2]), now) end
end
return #ids
"""

_REAP_LEASES = LUA_COMMON + r"""
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', k('inflight'), '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('inflight'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
  if r[1] == 'sending' then
    -- The worker vanished mid-send; the CAD may or may not have the call (see README).
    redis.call('HINCRBY', ck(id), 'attempts', 1)
    redis.call('HSET', ck(id), 'last_error', 'worker lost during the send (lease expired)')
    redis.call('HINCRBY', k('counters'), 'leases_expired', 1)
    release_probe(id)
    hold(id, tonumber(r[2]), now)
  end
end
return #ids
"""

_REAP_ORPHANS = LUA_COMMON + r"""
local now, cutoff, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', k('queued'), '-inf', cutoff, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('queued'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
  if r[1] == 'queued' then
    redis.call('HINCRBY', k('counters'), 'orphans_recovered', 1)
    hold(id, tonumber(r[2]), now)
  end
end
return #ids
"""

_FLUSH = LUA_COMMON + r"""
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local c = redis.call('HMGET', k('circuit'), 'state', 'flush')
if c[1] ~= 'closed' or c[2] ~= '1' then return 0 end
local ids = redis.call('ZRANGE', k('scheduled'), 0, limit - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('scheduled'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at')
  if r[1] == 'scheduled' then hold(id, tonumber(r[2]), now) end
end
if #ids < limit then redis.call('HDEL', k('circuit'), 'flush') end
return #ids
"""

_EXPIRE = LUA_COMMON + r"""
local now, max_age, limit, after = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  ARGV[5]
local n = 0
-- pending is ordered by enqueue time; a replayed call counts its age from the replay,
-- so old replayed calls can fill a page without expiring: the caller pages through,
-- each page starting after the last score of the one before.
local from = '-inf'
if after ~= '' then from = '(' .. after end
local page = redis.call('ZRANGEBYSCORE', k('pending'), from, now - max_age, 'WITHSCORES',
  'LIMIT', 0, limit)
local last = ''
for i = 1, #page, 2 do
  local id = page[i]
  last = page[i + 1]
  local r = redis.call('HMGET', ck(id), 'state', 'age_from')
  if (r[1] == 'held' or r[1] == 'scheduled') and now - num(r[2], now) > max_age then
    bury(id, now, 'expired', '', '', 'older than DISPATCHER_MAX_AGE_S before it could be sent')
    n = n + 1
  end
end
return {n, #page / 2, last}
"""

_RELEASE = LUA_COMMON + r"""
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local n = capacity(now, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
if n == 0 and redis.call('ZCARD', k('queued')) == 0 then
  -- One probe when the open breaker's cooldown is over (or a probe's lease ran out).
  local c = redis.call('HMGET', k('circuit'), 'state', 'open_until', 'probe_until')
  local paused = num(redis.call('HGET', k('rate'), 'pause_until'), 0) > now
  if not paused and ((c[1] == 'open' and now >= num(c[2], 0)) or
     (c[1] == 'half_open' and num(c[3], 0) <= now)) then n = 1 end
end
if n > limit then n = limit end
if n <= 0 then return {} end
local out = {}
local ids = redis.call('ZRANGE', k('held'), 0, n - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', k('held'), id)
  local r = redis.call('HMGET', ck(id), 'state', 'call', 'enqueued_at', 'idempotency_key')
  if r[1] == 'held' then
    local g = redis.call('HINCRBY', ck(id), 'gen', 1)
    local slot = reserve_slot(now, tonumber(ARGV[4]))
    redis.call('HSET', ck(id), 'state', 'queued', 'updated_at', now, 'slot', slot)
    redis.call('ZADD', k('queued'), now, id)
    for _, v in ipairs({id, tostring(g), r[2], r[3], r[4] or ''}) do table.insert(out, v) end
  end
end
return out
"""


@dataclass
class TickReport:
    """What one tick moved."""

    due: int = 0
    leases: int = 0
    orphans: int = 0
    flushed: int = 0
    expired: int = 0
    released: int = 0
    publish_failed: int = 0

    def total(self) -> int:
        return self.due + self.leases + self.orphans + self.flushed + self.expired + self.released


class Pump:
    """Runs the schedule's scripts and publishes what they release."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        publisher: Publisher,
        circuit: CircuitPolicy | None = None,
        clock: Callable[[], float] = time.time,
        orphan_after_s: float | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.publisher = publisher.bind(client)
        self.keys = Keys(settings.prefix)
        self.flow = Flow.from_settings(settings, circuit or CircuitPolicy.from_settings(settings))
        self.clock = clock
        self.orphan_after_s = orphan_after_s or settings.orphan_after_s
        self._promote = client.register_script(_PROMOTE)
        self._reap_leases = client.register_script(_REAP_LEASES)
        self._reap_orphans = client.register_script(_REAP_ORPHANS)
        self._flush = client.register_script(_FLUSH)
        self._expire = client.register_script(_EXPIRE)
        self._expire_after = ""
        self._release = client.register_script(_RELEASE)

    def tick(self) -> TickReport:
        """One pass over every step; returns what moved."""
        p = self.keys.prefix
        now = self.clock()
        report = TickReport()
        report.due = int(self._promote(args=[p, repr(now), BATCH]))
        report.leases = int(self._reap_leases(args=[p, repr(now), BATCH]))
        report.orphans = int(
            self._reap_orphans(args=[p, repr(now), repr(now - self.orphan_after_s), BATCH])
        )
        report.flushed = int(self._flush(args=[p, repr(now), BATCH]))
        if self.settings.max_age_s:
            report.expired = self._expire_page(now, self.settings.max_age_s)
        out = self._release(args=[p, repr(now), BATCH, *self.flow.argv()])
        items = []
        for i in range(0, len(out), 5):
            call_id, gen, call_json, enq, idem = (as_text(v) for v in out[i:i + 5])
            payload = {"v": 1, "id": call_id, "call": json.loads(call_json),
                       "idempotency_key": idem or None, "enqueued_at": float(enq)}
            items.append((payload, int(gen)))
        try:
            self.publisher.publish_many(items)  # one round trip, oldest first
            report.released = len(items)
        except Exception as exc:  # the orphan sweep brings the calls back; keep going
            report.publish_failed = len(items)
            log.warning("could not publish %d calls (%s); they will be retried", len(items),
                        type(exc).__name__)
        return report

    def _expire_page(self, now: float, max_age_s: float) -> int:
        """Expire what is too old in one page of ``pending``; the next tick reads the next.

        A short page means the end: the next tick starts from the oldest again. (Calls
        sharing the exact score that ends a page wait for the next round.)
        """
        expired, seen, last = self._expire(
            args=[self.keys.prefix, repr(now), repr(max_age_s), BATCH, self._expire_after])
        self._expire_after = "" if int(seen) < BATCH else as_text(last)
        return int(expired)

    def drain(self, max_ticks: int = 1000) -> TickReport:
        """Tick until nothing moves (tests and one-shot CLI use)."""
        total = TickReport()
        for _ in range(max_ticks):
            r = self.tick()
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(r, name))
            if r.total() == 0:
                break
        return total
