"""Refusals at the door, logged as one line per source per minute, not one per request.

A client that sends a wrong key 500 times a second would otherwise write 500 log lines a
second. The first refusal from an address is logged at once, whole; the ones that follow
are only counted, and one summary line (``N more refusals from ADDR in the last
minute``, with the last one's text) is written per minute while they go on. A source
quiet for a minute is forgotten (its next refusal is logged whole again). The state lives
in this process only (each web process logs its own share).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: One line per source per this many seconds.
WINDOW_S = 60.0
#: Addresses followed at once; beyond it the oldest is summed up early.
MAX_SOURCES = 10_000
#: How often the background sweep writes summaries that are due, seconds.
SWEEP_S = 5.0


@dataclass
class _Source:
    since: float
    more: int = 0
    level: int = logging.INFO
    last: str = ""


class RefusalLog:
    """Counts refusals per source address and logs them at most once a minute each."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic,
                 sweep_s: float | None = SWEEP_S) -> None:
        self.log = logger
        self.clock = clock
        self._sources: dict[str, _Source] = {}
        self._lock = threading.Lock()
        self._swept = clock()
        if sweep_s:
            thread = threading.Thread(target=self._sweep_forever, args=(sweep_s,),
                                      name="refusal-log", daemon=True)
            thread.start()

    def refused(self, addr: str, text: str, level: int = logging.INFO) -> None:
        """One refusal from addr (text is already safe to log: one line, no secret)."""
        now = self.clock()
        with self._lock:
            source = self._sources.get(addr)
            if source is None:
                if len(self._sources) >= MAX_SOURCES:
                    oldest = next(iter(self._sources))  # first followed (dicts keep order)
                    self._summarise(oldest, self._sources.pop(oldest))
                self._sources[addr] = _Source(since=now)
                first = True
            else:
                source.more += 1
                source.level = max(source.level, level)
                source.last = text
                first = False
        if first:
            self.log.log(level, "%s from %s", text, addr)
        if now - self._swept >= 1.0:  # at most once a second: a sweep reads every source
            self.sweep()

    def sweep(self) -> None:
        """Write the summaries that are due and forget quiet sources."""
        now = self.clock()
        due: list[tuple[str, _Source]] = []
        with self._lock:
            self._swept = now
            for addr, source in list(self._sources.items()):
                if now - source.since < WINDOW_S:
                    continue
                if source.more:  # still busy: its next refusals are counted, not logged
                    due.append((addr, _Source(source.since, source.more, source.level,
                                              source.last)))
                    source.since, source.more, source.level = now, 0, logging.INFO
                else:
                    del self._sources[addr]
        for addr, source in due:
            self._summarise(addr, source)

    def _summarise(self, addr: str, source: _Source) -> None:
        if source.more:
            self.log.log(source.level, "%d more refusal%s from %s in the last minute (last: %s)",
                         source.more, "" if source.more == 1 else "s", addr, source.last)

    def _sweep_forever(self, every: float) -> None:
        while True:
            time.sleep(every)
            with contextlib.suppress(Exception):  # a log helper must never end the process
                self.sweep()
