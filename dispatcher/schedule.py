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

    def tick(self) -> TickReport:
        """One pass over every step; returns what moved."""
        p = [self.keys.prefix]
        now = self.clock()
        report = TickReport()
        report.due = int(self._promote(keys=p, args=[repr(now), BATCH]))
        report.leases = int(self._reap_leases(keys=p, args=[repr(now), BATCH,
                                                            repr(VERIFY_AFTER_S)]))
        report.orphans = int(
            self._reap_orphans(keys=p, args=[repr(now), repr(now - self.orphan_after_s), BATCH])
        )
        report.flushed = int(self._flush(keys=p, args=[repr(now), BATCH]))
        if self.settings.max_age_s:
            report.expired = self._expire_page(now, self.settings.max_age_s)
        out = self._release(keys=p, args=[repr(now), BATCH, *self.flow.argv()])
        items = [(as_text(out[i]), int(out[i + 1])) for i in range(0, len(out), 2)]
        try:
            self.publisher.publish_many(items)  # one round trip, oldest first
            report.released = len(items)
        except Exception as exc:  # the orphan sweep brings the calls back; keep going
            report.publish_failed = len(items)
            log.warning("could not publish %d calls (%s); they will be retried", len(items),
                        type(exc).__name__)
        checks = self._readbacks.due(now)
        try:
            self.publisher.publish_readbacks(checks)
            report.readbacks = len(checks)
        except Exception as exc:  # the read-back's lease runs out and it starts again
            report.publish_failed += len(checks)
            log.warning("could not publish %d read-backs (%s); they will be retried",
                        len(checks), type(exc).__name__)
        return report

    def _expire_page(self, now: float, max_age_s: float) -> int:
        """Expire what is too old in one page of ``pending``; the next tick reads the next.

        A short page means the end: the next tick starts from the oldest again. (Calls
        sharing the exact score that ends a page wait for the next round.)
        """
        expired, seen, last = self._expire(
            keys=[self.keys.prefix], args=[repr(now), repr(max_age_s), BATCH, self._expire_after])
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


#: Every community's pump ticks at least this often, calls waiting or not (a community
#: with none waiting has nothing to move; this only bounds what a missed sign could cost).
FULL_SWEEP_S = 5.0


def busy(client: redis.Redis, pumps: list[Pump]) -> list[bool]:
    """Which pumps' communities have calls in play (held, queued, scheduled, in flight or
    verifying): one EXISTS each, in one round trip, so a tick's work grows with the
    communities that have calls waiting, not with all of them."""
    if len(pumps) == 1:
        return [True]
    pipe = client.pipeline(transaction=False)
    for pump in pumps:
        k = pump.keys
        pipe.exists(k.held, k.queued, k.scheduled, k.inflight, k.verifying)
    return [int(n) > 0 for n in pipe.execute()]


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
