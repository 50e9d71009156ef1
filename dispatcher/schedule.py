"""The schedule: moves waiting calls back into play, oldest first, at the pace allowed.

One `Pump.tick` does, each step one atomic script over a bounded batch (in
``dispatcher/lua/``: promote, reap_leases, reap_orphans, flush, expire, release):

1. due retries (``scheduled`` by due time) go back in line (``held``, by enqueue time);
2. calls whose worker died mid-send (lease expired in ``inflight``) wait for their
   server's read-back (``verifying``; back in line where the CAD has none);
3. calls whose message was lost (``queued`` longer than DISPATCHER_ORPHAN_AFTER_S) go back
   in line;
4. after the breaker closes, every call still on backoff goes back in line;
5. with DISPATCHER_MAX_AGE_S set, calls too old become dead letters ``expired``;
6. the oldest held calls get a Celery message, as many as the breaker and the rate
   limiter can take within the next slot wait (one probe when the breaker may test);
7. the read-backs that are due get a Celery message (`dispatcher.readback.Starter`).

Any number of pumps may run at once (each script re-checks state), so a crashed or
duplicated scheduler process is harmless. Waiting calls cost only Redis memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from dispatcher import clock as shared_clock
from dispatcher import scripts
from dispatcher.broker import Publisher
from dispatcher.keys import Keys
from dispatcher.policy import VERIFY_AFTER_S
from dispatcher.ratelimit import Flow
from dispatcher.readback import Starter
from dispatcher.redisconn import as_text
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

#: Most calls one script moves per tick, so no script blocks Redis for long.
BATCH = 1000
#: How often the scheduler process ticks.
TICK_S = 0.1
#: In the scheduler's loop (``tick_all(paced=True)``) a community's steps other than the
#: release run at most this often: due retries, expired leases, orphans, the flush after
#: the breaker closes, expiry and read-backs are all seconds-scale. The release runs every
#: tick unless its rate slot is further than the lookahead, and then waits for it (at
#: most RELEASE_HINT_MAX_S). So the scheduler's work per second grows with the calls it
#: releases, not with the ticks times the communities waiting.
MAINTAIN_S = 0.5
RELEASE_HINT_MAX_S = 1.0

@dataclass
class TickReport:
    """What one tick moved."""

    due: int = 0
    leases: int = 0
    orphans: int = 0
    flushed: int = 0
    expired: int = 0
    released: int = 0
    readbacks: int = 0
    publish_failed: int = 0

    def total(self) -> int:
        return (self.due + self.leases + self.orphans + self.flushed + self.expired
                + self.released + self.readbacks)


class Pump:
    """Runs the schedule's scripts and publishes what they release."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        publisher: Publisher,
        clock: Callable[[], float] = shared_clock.now,
        orphan_after_s: float | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.publisher = publisher.bind(client)
        self.keys = Keys(settings.prefix)
        self.flow = Flow.from_settings(settings)
        self.clock = clock
        self.orphan_after_s = orphan_after_s or settings.orphan_after_s
        self._promote = scripts.register(client, "promote.lua")
        self._reap_leases = scripts.register(client, "reap_leases.lua")
        self._reap_orphans = scripts.register(client, "reap_orphans.lua")
        self._flush = scripts.register(client, "flush.lua")
        self._expire = scripts.register(client, "expire.lua")
        self._expire_after = ""
        self._release = scripts.register(client, "release.lua")
        self._readbacks = Starter(client, settings)
        self._maintain_at = 0.0  # when the paced loop runs the steps besides the release
        self._release_at = 0.0  # when the paced loop runs the release again

    def tick(self) -> TickReport:
        """One pass over every step; returns what moved."""
        return tick_all(self.client, [self])[0]

    def queue(self, pipe: redis.client.Pipeline, now: float, paced: bool = False) -> list[str]:
        """Queue this tick's scripts on ``pipe``; returns the steps queued, in order.
        ``paced``: only the steps that are due (MAINTAIN_S, the release's own hint)."""
        p = [self.keys.prefix]
        steps: list[str] = []
        if not paced or now >= self._maintain_at:
            self._maintain_at = now + MAINTAIN_S
            self._promote(keys=p, args=[repr(now), BATCH], client=pipe)
            self._reap_leases(keys=p, args=[repr(now), BATCH, repr(VERIFY_AFTER_S)],
                              client=pipe)
            self._reap_orphans(keys=p, args=[repr(now), repr(now - self.orphan_after_s), BATCH],
                               client=pipe)
            self._flush(keys=p, args=[repr(now), BATCH], client=pipe)
            steps += ["due", "leases", "orphans", "flushed"]
            if self.settings.max_age_s:
                self._expire(keys=p, args=[repr(now), repr(self.settings.max_age_s), BATCH,
                                           self._expire_after], client=pipe)
                steps.append("expired")
            self._readbacks.queue(pipe, now)
            steps.append("readbacks")
        if not paced or now >= self._release_at:
            self._release(keys=p, args=[repr(now), BATCH, *self.flow.argv()], client=pipe)
            steps.append("released")
        return steps

    def settle(self, now: float, steps: list[str],
               results: list[Any]) -> tuple[TickReport, list[str]]:
        """Read the results of the steps `queue` queued; returns the report and the
        messages to push (released calls, oldest first, then read-backs)."""
        report = TickReport()
        messages: list[str] = []
        checks: list[tuple[str, int, float]] = []
        for step, result in zip(steps, results, strict=True):
            if step == "expired":
                expired, seen, last = result
                # A short page means the end: the next tick starts from the oldest again.
                self._expire_after = "" if int(seen) < BATCH else as_text(last)
                report.expired = int(expired)
            elif step == "readbacks":
                checks = self._readbacks.read(result)
                report.readbacks = len(checks)
            elif step == "released":
                hint = float(as_text(result[0]))
                self._release_at = now + min(hint, RELEASE_HINT_MAX_S)
                items = [(as_text(result[i]), int(result[i + 1]))
                         for i in range(1, len(result), 2)]
                report.released = len(items)
                messages += [self.publisher.message(call_id, gen) for call_id, gen in items]
            else:
                setattr(report, step, int(result))
        messages += [self.publisher.readback_message(*check) for check in checks]
        return report, messages

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


#: Every community's pump ticks at least this often, calls waiting or not (a community
#: with none waiting has nothing to move; this only bounds what a missed sign could cost).
FULL_SWEEP_S = 5.0


def tick_all(client: redis.Redis, pumps: list[Pump], paced: bool = False) -> list[TickReport]:
    """One tick of several communities' pumps in two round trips whatever their number:
    every step's script of every pump in one pipeline, then every message they release in
    another (oldest first within a community). Each step is still its own atomic script,
    so a crash between them leaves every call in one place, as with one pump. ``paced``
    (the scheduler's loop): only the steps that are due (see MAINTAIN_S)."""
    if not pumps:
        return []
    now = pumps[0].clock()
    pipe = client.pipeline(transaction=False)
    queued = [pump.queue(pipe, now, paced) for pump in pumps]
    results = scripts.execute(pipe) if len(pipe) else []
    reports: list[TickReport] = []
    out: list[tuple[str, str]] = []
    at = 0
    for pump, steps in zip(pumps, queued, strict=True):
        report, messages = pump.settle(now, steps, results[at:at + len(steps)])
        at += len(steps)
        out += [(pump.publisher.queue_key, message) for message in messages]
        reports.append(report)
    try:
        pumps[0].publisher.push(out)  # the pumps share one Redis client
    except Exception as exc:  # the orphan sweep and the read-back's lease bring them back
        for report in reports:
            report.publish_failed = report.released + report.readbacks
            report.released = report.readbacks = 0
        log.warning("could not publish %d messages (%s); they will be retried",
                    sum(r.publish_failed for r in reports), type(exc).__name__)
    return reports


def busy(client: redis.Redis, pumps: list[Pump]) -> list[bool]:
    """Which pumps' communities have calls in play (held, queued, scheduled, in flight or
    verifying): one script over all of them (``lua/busy.lua``), so a tick's work grows
    with the communities that have calls waiting, not with all of them."""
    if len(pumps) == 1:
        return [True]
    keys = [name for pump in pumps for name in (pump.keys.held, pump.keys.queued,
                                                pump.keys.scheduled, pump.keys.inflight,
                                                pump.keys.verifying)]
    return [int(n) > 0 for n in scripts.register(client, "busy.lua")(keys=keys)]


def release_now(settings: Settings, client: redis.Redis) -> TickReport:
    """One `Pump.tick` at once, with a publisher of its own (closed after), so calls just
    put back in line (a dead-letter replay) get a message now rather than at the
    scheduler's next tick. Raises what the tick raises; the scheduler releases them anyway.
    """
    publisher = Publisher(settings)
    try:
        return Pump(client, settings, publisher).tick()
    finally:
        publisher.close()
