"""The retry policy, as data: when a failed call is tried again, and when the breaker opens.

Backoff is tenacity's own ``wait_exponential_jitter`` strategy evaluated on a
``RetryCallState``; nothing here sleeps. The delay becomes a due time in the Redis
schedule (`dispatcher.lifecycle`), so a waiting call holds no worker and no memory.
There is no limit on attempts: a call is retried until it is delivered, found
permanently wrong, or (only if `DISPATCHER_MAX_AGE_S` is set) too old.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tenacity
from tenacity.wait import wait_base

from dispatcher.settings import (
    DEFAULT_CIRCUIT_COOLDOWN_S,
    DEFAULT_CIRCUIT_MAX_COOLDOWN_S,
    Settings,
)

#: First retry after about a second: most network blips last less.
BACKOFF_INITIAL_S = 1.0
#: Cap on one call's wait between tries; outages are handled by the breaker, which
#: holds every call and probes, so a long per-call wait would only delay recovery.
BACKOFF_MAX_S = 60.0
#: Up to this much random jitter, so calls that failed together do not retry together.
BACKOFF_JITTER_S = 1.0
#: Consecutive retryable failures (any call, any worker) that open the breaker.
CIRCUIT_FAILURE_THRESHOLD = 5
#: Pause of every sender after a 429 without a Retry-After header.
DEFAULT_RATE_LIMIT_PAUSE_S = 30.0
#: Longest a worker slot waits for its turn under the rate limit; past it the call goes
#: back to the ordered backlog in Redis instead of occupying the slot.
MAX_SLOT_WAIT_S = 3.0
#: How far ahead of its rate slot a held call gets its Celery message. The worker thread
#: that takes it sleeps until the slot, so this bounds what a waiting slot costs a
#: thread: with many communities at slow rates, a long lookahead would keep every thread
#: asleep on slots seconds away (bench/communities.py). It is a few scheduler ticks, so
#: a slot is never missed for want of a message.
RELEASE_AHEAD_S = 0.5
#: How long after an unknown outcome the read-back may settle the call: a CAD that took
#: the request may still be writing the call when our read timeout fires
#: (`dispatcher.readback`).
VERIFY_AFTER_S = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    """How long a call waits after its n-th consecutive retryable failure."""

    # Jitter is added after the cap, so calls at the cap do not retry in lockstep.
    wait: wait_base = field(
        default_factory=lambda: tenacity.wait_exponential(
            multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S
        ) + tenacity.wait_random(0, BACKOFF_JITTER_S)
    )

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds before the next try; a server's Retry-After is a floor, never ignored."""
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, failures)
        delay = float(self.wait(state))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


@dataclass(frozen=True)
class CircuitPolicy:
    """When the shared breaker opens and how long it stays open."""

    failure_threshold: int = CIRCUIT_FAILURE_THRESHOLD
    cooldown_s: float = DEFAULT_CIRCUIT_COOLDOWN_S
    max_cooldown_s: float = DEFAULT_CIRCUIT_MAX_COOLDOWN_S

    @classmethod
    def from_settings(cls, settings: Settings) -> CircuitPolicy:
        return cls(cooldown_s=settings.circuit_cooldown_s,
                   max_cooldown_s=max(settings.circuit_max_cooldown_s,
                                      settings.circuit_cooldown_s))
