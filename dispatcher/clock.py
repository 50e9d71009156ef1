"""One clock for every process, on every host: Redis's.

Every time that goes into Redis state or is compared with it (an enqueue time, a rate
slot, a lease's end, a heartbeat, a retry's due time, a read-back's lease) comes from
`now`. Workers, schedulers and doors on several machines share one Redis; their own
wall clocks may disagree by seconds (an NTP step, a VM resumed, no NTP at all), and
a lease written by a host 40 s behind looks expired to a scheduler on a host that is
right, a rate slot taken by one host looks free to another. Measured against Redis's
``TIME``, every process agrees to within its round trip to Redis.

`now` is ``time.time()`` plus this process's offset from Redis: no round trip.
`sync` measures the offset (a few ``TIME`` requests, the one with the shortest round
trip kept, Redis's time taken as at its midpoint); each process calls it when it first
connects (worker, scheduler, bridge, web, CLI commands, a Python `Producer`) and
`sync_if_due` keeps it measured every `RESYNC_S` (the scheduler's loop, the worker's
heartbeat thread, a producer's enqueue), so a host whose clock steps is followed.

Monotonic clocks that time local waits (a request's deadline, a sleep) are not this
clock's business, nor the CAD's own clock (a Retry-After HTTP date, `cad.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger("dispatcher.clock")

#: Seconds between two measurements of one process (`sync_if_due`).
RESYNC_S = 60.0
#: After a failed measurement, seconds before `sync_if_due` tries again.
RETRY_S = 5.0
#: ``TIME`` requests per measurement; the one with the shortest round trip is kept.
SAMPLES = 3
#: An offset larger than this (seconds) is logged, once per change of that size.
LOG_SKEW_S = 0.5

_offset = 0.0
_rtt: float | None = None
_logged = 0.0
_next_at = 0.0  # monotonic time of the next measurement `sync_if_due` makes
_lock = threading.Lock()


def now() -> float:
    """Seconds since the epoch by Redis's clock (this host's clock plus its offset)."""
    return time.time() + _offset


def offset() -> float:
    """The last measured offset: Redis's clock minus this host's (0.0 before a `sync`)."""
    return _offset


def synced() -> bool:
    """Whether this process has measured its offset."""
    return _rtt is not None


def measure(client: Any, samples: int = SAMPLES) -> tuple[float, float]:
    """(offset, round trip) of the ``TIME`` sample with the shortest round trip."""
    best: tuple[float, float] | None = None
    for _ in range(max(1, samples)):
        wall = time.time()
        started = time.monotonic()
        seconds, micros = client.time()
        rtt = time.monotonic() - started
        # The wall clock at the round trip's midpoint, timed by the monotonic clock so a
        # step of the wall clock during the request cannot bend it.
        theirs = float(seconds) + float(micros) / 1e6
        sample = (theirs - (wall + rtt / 2.0), rtt)
        if best is None or sample[1] < best[1]:
            best = sample
    assert best is not None
    return best


def sync(client: Any, samples: int = SAMPLES) -> float:
    """Measure this process's offset from Redis now; the offset. Raises Redis's errors."""
    global _offset, _rtt, _logged, _next_at
    measured, rtt = measure(client, samples)
    with _lock:
        _offset, _rtt = measured, rtt
        _next_at = time.monotonic() + RESYNC_S
        if abs(measured) > LOG_SKEW_S and abs(measured - _logged) > LOG_SKEW_S:
            _logged = measured
            _log_skew()
        elif abs(measured) <= LOG_SKEW_S and abs(_logged) > LOG_SKEW_S:
            _logged = measured
            log.info("this host's clock is within %.1fs of Redis's again (%+.3fs)",
                     LOG_SKEW_S, -measured)
    return measured


def _log_skew() -> None:
    log.info("this host's clock is %+.3fs from Redis's (clock skew; round trip %.1f ms): "
             "times in Redis use Redis's clock", -_offset, (_rtt or 0.0) * 1000)


def announce() -> None:
    """Log the measured skew again when it is over LOG_SKEW_S (a process whose logging was
    set up after its first `sync`: Celery's worker configures it after ``worker_init``)."""
    if _rtt is not None and abs(_offset) > LOG_SKEW_S:
        _log_skew()


def sync_quietly(client: Any) -> bool:
    """`sync`, never raising: False when Redis did not answer (the offset is kept)."""
    global _next_at
    try:
        sync(client)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, a fake: keep the old offset
        with _lock:
            _next_at = time.monotonic() + RETRY_S
        log.debug("clock not measured against Redis: %s", type(exc).__name__)
        return False
    return True


def sync_if_due(client: Any) -> None:
    """`sync_quietly` when this process never measured or the last measure is RESYNC_S
    old; one thread measures at a time, the others go on with the offset they have."""
    global _next_at
    if time.monotonic() < _next_at:
        return
    if not _lock.acquire(blocking=False):
        return
    try:
        if time.monotonic() < _next_at:
            return
        _next_at = time.monotonic() + RETRY_S  # this thread measures; others need not
    finally:
        _lock.release()
    sync_quietly(client)


def _reset() -> None:
    """Forget the measurement (tests)."""
    global _offset, _rtt, _logged, _next_at
    with _lock:
        _offset, _rtt, _logged, _next_at = 0.0, None, 0.0, 0.0
