"""Worker heartbeats: which workers are alive, in one Redis hash.

Each worker process writes ``{p}:heartbeats[name] = {"at", "interval", ...}`` every
INTERVAL_S from a daemon thread of its own (see workers/app.py) and deletes its entry
when it shuts down cleanly. A reader calls a worker alive while its last beat is
younger than ALIVE_INTERVALS of the interval *that worker* announced, so readers
need no configuration. A worker killed without a goodbye is dead after three missed
beats and its entry is dropped after FORGET_AFTER_S by whichever worker beats next.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from dispatcher import clock as shared_clock
from dispatcher.keys import Keys

log = logging.getLogger("dispatcher.heartbeat")

#: Seconds between two beats of one worker.
INTERVAL_S = 10.0
#: A worker whose last beat is older than this many intervals is not alive.
ALIVE_INTERVALS = 3
#: An entry this old is deleted: a vanished worker is listed (not alive) for an hour.
FORGET_AFTER_S = 3600.0


def worker_name(hostname: str | None = None) -> str:
    """This process's name in the hash: Celery's node name (or the host) and the pid."""
    return f"{hostname or socket.gethostname()}/{os.getpid()}"


@dataclass(frozen=True)
class Beat:
    """The last heartbeat of one worker, as a reader sees it."""

    name: str
    at: float
    interval: float
    started_at: float | None
    concurrency: int | None
    age_s: float

    @property
    def alive(self) -> bool:
        return self.age_s < ALIVE_INTERVALS * self.interval

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "alive": self.alive, "last_beat_age_s": round(self.age_s, 3),
                "interval_s": self.interval, "started_at": self.started_at,
                "concurrency": self.concurrency}


class Heartbeats:
    """Writes and reads the heartbeat hash."""

    def __init__(self, client: redis.Redis, prefix: str = "dispatcher",
                 clock: Callable[[], float] = shared_clock.now) -> None:
        self.client = client
        # Processes serve every community: their heartbeats live under the base prefix
        # (a community's prefix is ``base@name``, dispatcher.communities).
        self.key = Keys(prefix.split("@", 1)[0]).heartbeats
        self.clock = clock

    def beat(self, name: str, interval: float = INTERVAL_S, started_at: float | None = None,
             concurrency: int | None = None) -> None:
        """Record that ``name`` is alive now; drop entries forgotten long ago."""
        now = self.clock()
        entry = {"at": now, "interval": interval, "started_at": started_at,
                 "concurrency": concurrency}
        self.client.hset(self.key, name, json.dumps(entry))
        stale = [b.name for b in self.all() if b.age_s > FORGET_AFTER_S]
        if stale:
            self.client.hdel(self.key, *stale)

    def goodbye(self, name: str) -> None:
        """Remove ``name`` at once (a clean shutdown)."""
        self.client.hdel(self.key, name)

    def all(self) -> list[Beat]:
        """Every known worker, most recent beat first."""
        now = self.clock()
        beats = []
        for raw_name, raw in self.client.hgetall(self.key).items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            try:
                data = json.loads(raw)
                at, interval = float(data["at"]), float(data["interval"])
            except (ValueError, KeyError, TypeError):
                continue  # an entry we cannot read is no proof of life
            started = data.get("started_at")
            concurrency = data.get("concurrency")
            beats.append(Beat(name, at, interval,
                              float(started) if started is not None else None,
                              int(concurrency) if concurrency is not None else None,
                              max(0.0, now - at)))
        return sorted(beats, key=lambda b: b.age_s)

    def alive(self) -> list[Beat]:
        return [b for b in self.all() if b.alive]


class HeartbeatThread:
    """A daemon thread that beats until stopped; never raises into the worker."""

    def __init__(self, heartbeats: Heartbeats, name: str, interval: float = INTERVAL_S,
                 concurrency: int | None = None) -> None:
        self.heartbeats = heartbeats
        self.name = name
        self.interval = interval
        self.concurrency = concurrency
        self.started_at = heartbeats.clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dispatcher-heartbeat",
                                        daemon=True)
        self._failing = False

    def start(self) -> HeartbeatThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop beating and say goodbye, so readers see this worker gone at once."""
        self._stop.set()
        self._thread.join(timeout)
        try:
            self.heartbeats.goodbye(self.name)
        except redis.RedisError as exc:  # readers notice after three missed beats instead
            log.warning("could not remove heartbeat %s: %s", self.name, type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._beat_once()
            self._stop.wait(self.interval)

    def _beat_once(self) -> None:
        # The worker's clock against Redis's, measured again every minute (it was first at
        # worker_init), so a step of this host's clock is followed.
        shared_clock.sync_if_due(self.heartbeats.client)
        try:
            self.heartbeats.beat(self.name, self.interval, self.started_at, self.concurrency)
        except Exception as exc:  # Redis down or full: try again next interval, keep quiet
            if not self._failing:
                log.warning("heartbeat not recorded (%s); retrying every %gs",
                            type(exc).__name__, self.interval)
            self._failing = True
        else:
            if self._failing:
                log.info("heartbeat recorded again")
            self._failing = False
