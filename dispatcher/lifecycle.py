"""A call's life in Redis: enqueue, claim, and the three outcomes of a send.

    enqueue ──> queued (Celery message out) ──claim──> sending ──> delivered
       │           ▲                              │  │
       └──> held ──┘ (released oldest first       │  ├──> scheduled (backoff) ──due──> held
            by `dispatcher.schedule`)             │  └──> dead (permanent, expired)
                    ▲                             │
                    └── breaker open, rate slot too far, 429 pause, lease lost

Each arrow is one Lua script (atomic), so a process killed at any moment leaves the
call in exactly one place. A message carries the call's generation (``gen``); only
the message of the current generation may claim it, so a redelivered or duplicated
Celery message is dropped harmlessly. A delivered call is never claimed again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from dispatcher.call import Call
from dispatcher.errors import InvalidCall
from dispatcher.keys import DELIVERED_TTL_S, IDEMPOTENCY_TTL_S, LUA_COMMON, Keys
from dispatcher.policy import CircuitPolicy
from dispatcher.settings import Settings
from dispatcher.telemetry import bucket_for

#: Extra spacing over 1/rate (2 % plus up to 10 ms), so scheduling and network jitter
#: of a few ms never lets two requests land closer than the limit allows at the CAD.
RATE_MARGIN = 1.02
RATE_MARGIN_S = 0.01
#: Most Celery messages out at once when no rate limit applies (bounds the broker list).
UNLIMITED_WINDOW = 256
#: A claimed call's lease beyond the request deadline; a worker that dies mid-send
#: gives the call back to the backlog when the lease ends.
LEASE_MARGIN_S = 15.0

_ENQUEUE = LUA_COMMON + r"""
local id, now = ARGV[2], tonumber(ARGV[4])
local existing = nil
if ARGV[5] ~= '' then existing = redis.call('GET', k('idem:' .. ARGV[5])) end
-- The backlog cap (ARGV[15], 0: none) counts every call not yet delivered or dead. A
-- call already recorded (idempotency key, or its id) is not new work: it is answered.
local cap = tonumber(ARGV[15]) or 0
if cap > 0 and not existing and redis.call('EXISTS', ck(id)) == 0 then
  local waiting = redis.call('ZCARD', k('pending'))
  if waiting >= cap then return {'', 'full', tostring(waiting)} end
end
-- From the inbox: the entry leaves its processing list in the same step that records it.
if ARGV[11] and ARGV[11] ~= '' then
  if redis.call('LREM', ARGV[11], 1, ARGV[12]) == 0 then return {'', 'gone'} end
end
if existing then return {existing, 'duplicate'} end
if ARGV[5] ~= '' then redis.call('SET', k('idem:' .. ARGV[5]), id, 'EX', ARGV[6]) end
if redis.call('EXISTS', ck(id)) == 1 then return {id, 'duplicate'} end
redis.call('HSET', ck(id), 'id', id, 'call', ARGV[3], 'enqueued_at', ARGV[4],
  'age_from', ARGV[4], 'attempts', 0, 'failures', 0, 'gen', 0, 'source', ARGV[7],
  'idempotency_key', ARGV[5], 'replays', 0, 'updated_at', now)
redis.call('ZADD', k('pending'), now, id)
redis.call('HINCRBY', k('counters'), 'enqueued', 1)
if redis.call('ZCARD', k('held')) == 0 and
   capacity(now, tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])) > 0 then
  local slot = reserve_slot(now, tonumber(ARGV[8]))
  redis.call('HSET', ck(id), 'state', 'queued', 'gen', 1, 'slot', slot)
  redis.call('ZADD', k('queued'), now, id)
  if ARGV[14] and ARGV[14] ~= '' then
    -- The Celery message goes out in the same atomic step as the record.
    redis.call('LPUSH', ARGV[13], ARGV[14])
    return {id, 'pushed', '1'}
  end
  return {id, 'publish', '1'}
end
hold(id, now, now)
return {id, 'held'}
"""

#: A slot this far in the past (or one interval, if longer) means the call's message
#: waited for a worker; its claim re-slots the whole line (see ``reslot`` below).
STALE_SLOT_S = 1.0

_CLAIM = LUA_COMMON + f"local STALE_SLOT_S = {STALE_SLOT_S}\n" + r"""
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
      mine = s  -- beyond the wait, the claim below holds it
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

local id, gen, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local lease, max_age, probe_lease = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local interval, max_wait, limit_gap = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local r = redis.call('HMGET', ck(id), 'state', 'gen', 'age_from', 'enqueued_at', 'call',
  'failures', 'slot')
if not r[1] then return {'missing'} end
if r[1] ~= 'queued' or r[2] ~= gen then return {'stale', r[1]} end
local enq = tonumber(r[4])
redis.call('ZREM', k('queued'), id)
if max_age > 0 and now - tonumber(r[3]) > max_age then
  bury(id, now, 'expired', '', '', 'older than DISPATCHER_MAX_AGE_S before it could be sent')
  return {'expired'}
end
-- The shared breaker: closed admits; open holds until its cooldown ends, then one probe.
local c = redis.call('HMGET', k('circuit'), 'state', 'open_until', 'probe', 'probe_until')
local st = c[1] or 'closed'
if st ~= 'closed' then
  if (st == 'open' and now < num(c[2], 0)) or
     (st == 'half_open' and c[3] ~= id and num(c[4], 0) > now) then
    hold(id, enq, now)
    return {'held', 'circuit'}
  end
  redis.call('HSET', k('circuit'), 'state', 'half_open', 'probe', id,
    'probe_until', now + probe_lease)
end
-- A 429 pause holds every call, whatever slot it was given.
if num(redis.call('HGET', k('rate'), 'pause_until'), 0) > now then
  release_probe(id)
  hold(id, enq, now)
  return {'held', 'paused'}
end
-- The shared rate limiter. The slot given at release keeps the line's order; the
-- calendar of granted starts keeps every two grants at least the limit apart (the send
-- gate spaces the actual sends by the full interval), so a claim that comes late (a
-- busy worker) takes the nearest free time instead of crowding a neighbour: it goes
-- behind the calls granted meanwhile.
local start = now
if interval > 0 then
  local slot = num(r[7], 0)
  if slot <= 0 then slot = reserve_slot(now, interval)
  elseif st == 'closed' and slot < now - math.max(interval, STALE_SLOT_S) then
    -- (Not for the breaker's probe: the rest of the line waits for the breaker.)
    slot = reslot(id, slot, now, interval, max_wait)
  end
  start = math.max(slot, now)
  local cal = k('rate:granted')
  redis.call('ZREMRANGEBYSCORE', cal, '-inf', now - interval)
  -- Two grants conflict only when closer than the limit itself (1/DISPATCHER_MAX_RATE,
  -- less a millisecond for float rounding). The interval's margin above it absorbs a
  -- claim that comes a few ms after its slot (the first call of a backlog always does):
  -- the send gate then spaces the actual sends by the full interval, instead of the
  -- late grant pushing every later grant a whole interval on, until one is held and its
  -- slot goes unused.
  local gap = limit_gap - math.min(0.001, limit_gap / 2)
  for _ = 1, 1000 do
    local hit = redis.call('ZRANGEBYSCORE', cal, '(' .. (start - gap), '(' .. (start + gap),
      'WITHSCORES', 'LIMIT', 0, 1)
    if #hit == 0 then break end
    start = tonumber(hit[2]) + interval
  end
  if start - now <= max_wait then redis.call('ZADD', cal, start, id) end
end
if start - now > max_wait then
  release_probe(id)
  hold(id, enq, now)
  redis.call('HINCRBY', k('counters'), 'rate_limit_waits', 1)
  return {'held', 'rate'}
end
redis.call('HSET', ck(id), 'state', 'sending', 'updated_at', now)
redis.call('ZADD', k('inflight'), start + lease, id)
return {'claimed', r[5], r[6] or '0', tostring(start - now), r[4]}
"""

_GATE = LUA_COMMON + r"""
-- The last check before a request leaves: never two sends closer than the interval,
-- measured on the sends themselves (a thread may wake late from its slot wait).
local now, interval = tonumber(ARGV[2]), tonumber(ARGV[3])
if num(redis.call('HGET', k('rate'), 'pause_until'), 0) > now then return 'paused' end
local last = num(redis.call('HGET', k('rate'), 'last_send'), 0)
if now < last + interval then return tostring(last + interval - now) end
redis.call('HSET', k('rate'), 'last_send', now)
return 'go'
"""

_DELIVERED = LUA_COMMON + r"""
local id, now = ARGV[2], tonumber(ARGV[3])
observe('delivered', ARGV[8], ARGV[9])
local st = redis.call('HGET', ck(id), 'state')
if not st then return 'missing' end
if st == 'delivered' then return 'already' end
unplace(id)
redis.call('HINCRBY', ck(id), 'attempts', 1)
redis.call('HSET', ck(id), 'state', 'delivered', 'cad_call_id', ARGV[4], 'status_code', ARGV[5],
  'response', ARGV[6], 'delivered_at', now, 'updated_at', now, 'last_error', '', 'reason', '')
redis.call('HINCRBY', k('counters'), 'delivered', 1)
circuit_success(now)
if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', ck(id), ARGV[7]) end
return 'delivered'
"""

_RETRY = LUA_COMMON + r"""
local id, gen, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
observe('retryable', ARGV[14], ARGV[15])
local r = redis.call('HMGET', ck(id), 'state', 'gen', 'enqueued_at')
if r[1] ~= 'sending' or r[2] ~= gen then return 'stale' end
redis.call('ZREM', k('inflight'), id)
redis.call('HINCRBY', ck(id), 'attempts', 1)
redis.call('HSET', ck(id), 'last_error', ARGV[6], 'status_code', ARGV[7], 'response', ARGV[8],
  'updated_at', now)
if ARGV[9] == 'ratelimit' then
  -- A 429 pauses every sender and costs the call nothing: back in line, same place.
  local pause = now + tonumber(ARGV[10])
  if pause > num(redis.call('HGET', k('rate'), 'pause_until'), 0) then
    redis.call('HSET', k('rate'), 'pause_until', pause)
  end
  redis.call('HINCRBY', k('counters'), 'rate_limited', 1)
  circuit_success(now)
  hold(id, tonumber(r[3]), now)
  return 'held'
end
redis.call('HINCRBY', ck(id), 'failures', 1)
redis.call('HINCRBY', k('counters'), 'retried', 1)
circuit_failure(id, now, ARGV[6], tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]))
release_probe(id)
if redis.call('HGET', k('circuit'), 'state') == 'open' then
  -- The CAD is down: the breaker paces retries now; keep the call's place in line so
  -- the backlog drains oldest first.
  hold(id, tonumber(r[3]), now)
  return 'held'
end
redis.call('HSET', ck(id), 'state', 'scheduled', 'due', ARGV[5])
redis.call('ZADD', k('scheduled'), ARGV[5], id)
return 'scheduled'
"""

_UNCLAIM = LUA_COMMON + r"""
local id, gen, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local r = redis.call('HMGET', ck(id), 'state', 'gen', 'enqueued_at')
if r[1] ~= 'sending' or r[2] ~= gen then return 'stale' end
redis.call('ZREM', k('inflight'), id)
release_probe(id)
hold(id, tonumber(r[3]), now)
return 'held'
"""

_DEAD = LUA_COMMON + r"""
local id, gen, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
observe('permanent', ARGV[9], ARGV[10])
local r = redis.call('HMGET', ck(id), 'state', 'gen')
if r[1] ~= 'sending' or r[2] ~= gen then return 'stale' end
redis.call('HINCRBY', ck(id), 'attempts', 1)
bury(id, now, ARGV[5], ARGV[6], ARGV[7], ARGV[8])
-- The CAD answered, so it is up, whatever it thought of this call.
circuit_success(now)
return 'dead'
"""


@dataclass(frozen=True)
class Flow:
    """Pacing parameters shared by enqueue, claim and release."""

    interval_s: float
    max_wait_s: float
    window: int
    #: Least time between two actual sends (the interval, margin included).
    send_gap_s: float = 0.0
    #: The limit itself, 1/DISPATCHER_MAX_RATE: the least time between two grants.
    limit_gap_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, circuit: CircuitPolicy) -> Flow:
        interval = gap = 0.0
        if settings.max_rate > 0:
            gap = 1 / settings.max_rate
            interval = gap * RATE_MARGIN + min(RATE_MARGIN_S, gap / 100)
        return cls(interval, circuit.max_slot_wait_s, UNLIMITED_WINDOW, interval, gap)

    def argv(self) -> list[Any]:
        return [repr(self.interval_s), repr(self.max_wait_s), self.window]


@dataclass(frozen=True)
class Enqueued:
    """Result of `Lifecycle.enqueue`."""

    call_id: str
    publish: bool
    gen: int
    duplicate: bool
    gone: bool = False
    #: The message was pushed by the script itself.
    pushed: bool = False
    #: Refused: the backlog cap was reached (``waiting`` calls); nothing was recorded.
    full: bool = False
    waiting: int = 0


@dataclass(frozen=True)
class Claim:
    """Result of `Lifecycle.claim`: ``kind`` is claimed, held, stale, expired or missing."""

    kind: str
    call: Call | None = None
    failures: int = 0
    wait_s: float = 0.0
    detail: str = ""
    #: When the rate limiter's slot for this call begins (absolute time).
    start_at: float = 0.0


class Lifecycle:
    """The state-changing scripts of one call, bound to a Redis client."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        circuit: CircuitPolicy | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.circuit = circuit or CircuitPolicy.from_settings(settings)
        self.flow = Flow.from_settings(settings, self.circuit)
        self.clock = clock or time.time
        self.lease_s = settings.request_deadline_s + LEASE_MARGIN_S
        self._enqueue = client.register_script(_ENQUEUE)
        self._claim = client.register_script(_CLAIM)
        self._delivered = client.register_script(_DELIVERED)
        self._retry = client.register_script(_RETRY)
        self._dead = client.register_script(_DEAD)
        self._unclaim = client.register_script(_UNCLAIM)
        self._gate = client.register_script(_GATE)

    def enqueue(
        self, call: Call, source: str = "api", take_from: tuple[str, str] | None = None,
        message: tuple[str, str] | None = None,
    ) -> Enqueued:
        """Record a call (idempotently); say whether the caller must still publish it.

        ``take_from=(list_key, raw)`` removes that entry from that list in the same
        atomic step; if it is no longer there (another bridge took it), nothing is
        recorded and ``gone`` is true. ``message=(queue_key, json)`` is the call's first
        Celery message, pushed in the same step when the call may go at once.
        """
        return _enqueued(self._enqueue(args=self._enqueue_args(call, source, take_from, message)))

    def enqueue_pipelined(
        self, pipe: redis.client.Pipeline, call: Call, source: str,
        take_from: tuple[str, str] | None = None, message: tuple[str, str] | None = None,
    ) -> None:
        """Queue the same script on a pipeline; parse its reply with `enqueued_from`."""
        self._enqueue(args=self._enqueue_args(call, source, take_from, message), client=pipe)

    @staticmethod
    def enqueued_from(reply: Any) -> Enqueued:
        return _enqueued(reply)

    def _enqueue_args(
        self, call: Call, source: str, take_from: tuple[str, str] | None,
        message: tuple[str, str] | None,
    ) -> list[Any]:
        return [self.keys.prefix, call.id, json.dumps(call.to_cad(), ensure_ascii=False),
                repr(call.enqueued_at), call.idempotency_key or "", IDEMPOTENCY_TTL_S,
                source, *self.flow.argv(), *(take_from or ("", "")), *(message or ("", "")),
                self.settings.max_backlog]

    def claim(self, call_id: str, gen: int) -> Claim:
        """Take a queued call for sending, or say why not (atomic with breaker and rate)."""
        now = self.clock()
        res = self._claim(
            args=[self.keys.prefix, call_id, str(gen), repr(now), repr(self.lease_s),
                  repr(self.settings.max_age_s or 0), repr(self.lease_s),
                  repr(self.flow.interval_s), repr(self.flow.max_wait_s),
                  repr(self.flow.limit_gap_s)]
        )
        kind = as_text(res[0])
        if kind != "claimed":
            return Claim(kind, detail=as_text(res[1]) if len(res) > 1 and res[1] else "")
        try:
            call = Call.parse(json.loads(as_text(res[1])))
            call = call.with_envelope(call_id, float(as_text(res[4])))
        except (InvalidCall, ValueError) as exc:
            # A record that no longer validates (limits tightened by an upgrade, a hand
            # edit) would loop forever; it becomes a dead letter an operator can see.
            self.dead(call_id, gen, "invalid", None, None, f"stored call is not valid: {exc}")
            return Claim("invalid", detail=str(exc))
        wait = float(as_text(res[3]))
        return Claim(kind, call, int(as_text(res[2]) or 0), wait, start_at=now + wait)

    def delivered(self, call_id: str, cad_call_id: str | None, status: int, response: str,
                  elapsed_s: float | None = None) -> str:
        """Record a delivery; always wins, whoever else touched the call meanwhile."""
        return as_text(self._delivered(
            args=[self.keys.prefix, call_id, repr(self.clock()), cad_call_id or "", status,
                  response, DELIVERED_TTL_S, *_latency(elapsed_s)]
        ))

    def retry(
        self, call_id: str, gen: int, due: float, error: str, status: int | None,
        response: str | None, rate_limited: bool = False, retry_after: float | None = None,
        elapsed_s: float | None = None,
    ) -> str:
        """Record a retryable failure: schedule (backoff) or, for a 429, pause and hold."""
        c = self.circuit
        pause = retry_after if retry_after is not None else c.rate_limit_pause_s
        return as_text(self._retry(
            args=[self.keys.prefix, call_id, str(gen), repr(self.clock()), repr(due), error,
                  "" if status is None else status, response or "",
                  "ratelimit" if rate_limited else "error", repr(pause),
                  c.failure_threshold, repr(c.cooldown_s), repr(c.max_cooldown_s),
                  *_latency(elapsed_s)]
        ))

    def gate(self) -> str | float:
        """"go" (send now), "paused" (a 429 pause began), or seconds to wait first."""
        res = as_text(self._gate(args=[self.keys.prefix, repr(self.clock()),
                                  repr(self.flow.send_gap_s)]))
        return res if res in ("go", "paused") else float(res)

    def paused_until(self) -> float:
        """End of the current 429 pause (0 when none)."""
        value = self.client.hget(self.keys.rate, "pause_until")
        return float(value) if value else 0.0

    def unclaim(self, call_id: str, gen: int) -> str:
        """Give a claimed call back to the line unsent (no attempt counted)."""
        now = repr(self.clock())
        return as_text(self._unclaim(args=[self.keys.prefix, call_id, str(gen), now]))

    def dead(
        self, call_id: str, gen: int, reason: str, status: int | None, response: str | None,
        error: str, elapsed_s: float | None = None,
    ) -> str:
        """Record a permanent failure: the call becomes a dead letter."""
        return as_text(self._dead(
            args=[self.keys.prefix, call_id, str(gen), repr(self.clock()), reason,
                  "" if status is None else status, response or "", error,
                  *_latency(elapsed_s)]
        ))


def _latency(elapsed_s: float | None) -> tuple[str, str]:
    """Histogram bucket and duration for the outcome scripts ("" = nothing to record)."""
    if elapsed_s is None:
        return ("", "0")
    return (bucket_for(elapsed_s), repr(elapsed_s))


def _enqueued(res: Any) -> Enqueued:
    call_id = as_text(res[0])
    kind = as_text(res[1])
    out = kind in ("publish", "pushed")
    if kind == "full":
        return Enqueued("", False, 0, False, full=True, waiting=int(as_text(res[2])))
    return Enqueued(call_id, kind == "publish", int(as_text(res[2])) if out else 0,
                    kind == "duplicate", kind == "gone", kind == "pushed")


def as_text(value: Any) -> str:
    """A Redis reply (bytes or not) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
