"""History: the last hour of queue depth and deliveries, for the operations page's chart.

The scheduler records one sample every SAMPLE_EVERY_S into the capped Redis list
``{p}:history`` (newest first, KEEP samples). A sample is a JSON object
``{"t": time, "depth": queued + scheduled, "delivered": the delivered counter,
"dead": dead letters}``. The append is one script that refuses a sample when the newest
one is too recent, so any number of schedulers together write one series.
The delivery rate is derived by the reader from consecutive counter values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from dispatcher import clock as shared_clock
from dispatcher import scripts
from dispatcher.keys import Keys
from dispatcher.records import Records

log = logging.getLogger("dispatcher.history")

#: Seconds between two samples.
SAMPLE_EVERY_S = 10.0
#: Samples kept: one hour.
KEEP = 360
#: Two samples further apart than this have a gap between them (no scheduler ran).
GAP_AFTER_S = 3 * SAMPLE_EVERY_S

@dataclass(frozen=True)
class Sample:
    """One point of the series."""

    t: float
    depth: int
    delivered: int
    dead: int


@dataclass(frozen=True)
class Point:
    """One point of the chart: depth, and deliveries per minute since the previous sample."""

    t: float
    depth: int
    rate_per_min: float | None
    gap_before: bool


class History:
    """Appends and reads the sample list."""

    def __init__(self, client: redis.Redis, prefix: str = "dispatcher",
                 clock: Callable[[], float] = shared_clock.now,
                 every_s: float = SAMPLE_EVERY_S) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.records = Records(client, prefix, clock)
        self.clock = clock
        self.every_s = every_s
        self._append = scripts.register(client, "history_append.lua")
        self._next_at = 0.0

    def tick(self) -> bool:
        """Record a sample if one is due (cheap to call every scheduler tick); never raises
        for a Redis that refuses writes (OOM): history must not stop the scheduler."""
        now = self.clock()
        if now < self._next_at:
            return False
        self._next_at = now + self.every_s
        try:
            return self.record()
        except redis.ResponseError as exc:
            log.warning("history sample not recorded: %s", str(exc).splitlines()[0][:200])
            return False

    def record(self) -> bool:
        """Append a sample of the current figures; False if another process just did."""
        stats = self.records.stats()
        sample = Sample(self.clock(), int(stats["queued"]) + int(stats["scheduled"]),
                        int(stats["delivered"]), int(stats["dead"]))
        return self.append(sample)

    def append(self, sample: Sample) -> bool:
        body = json.dumps({"t": round(sample.t, 3), "depth": sample.depth,
                           "delivered": sample.delivered, "dead": sample.dead})
        # Half a period of tolerance, so two schedulers ticking out of step still
        # produce one sample per period rather than alternating refusals.
        done = self._append(keys=[self.keys.history], args=[body, repr(sample.t),
                                  repr(self.every_s * 0.5), KEEP])
        return bool(done)

    def samples(self, window_s: float = KEEP * SAMPLE_EVERY_S) -> list[Sample]:
        """Samples of the last ``window_s`` seconds, oldest first."""
        since = self.clock() - window_s
        out = []
        for raw in self.client.lrange(self.keys.history, 0, KEEP - 1):
            sample = _parse(raw)
            if sample is not None and sample.t >= since:
                out.append(sample)
        return sorted(out, key=lambda s: s.t)

    def points(self, window_s: float = KEEP * SAMPLE_EVERY_S) -> list[Point]:
        return points(self.samples(window_s))


def points(samples: list[Sample]) -> list[Point]:
    """Depth and delivery rate per sample; the rate is None after a gap or a reset."""
    out: list[Point] = []
    prev: Sample | None = None
    for s in samples:
        gap = prev is None or s.t - prev.t > GAP_AFTER_S
        rate = None
        if prev is not None and not gap and s.t > prev.t and s.delivered >= prev.delivered:
            rate = (s.delivered - prev.delivered) * 60.0 / (s.t - prev.t)
        out.append(Point(s.t, s.depth, rate, gap and prev is not None))
        prev = s
    return out


def _parse(raw: Any) -> Sample | None:
    try:
        data = json.loads(raw)
        return Sample(float(data["t"]), int(data["depth"]), int(data["delivered"]),
                      int(data["dead"]))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Chart:
    """The hour as an SVG chart draws it: paths in pixel space and axis labels."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    depth_line: str
    depth_area: str
    rate_line: str
    depth_max: float
    rate_max: float
    x_ticks: list[tuple[float, str]]
    samples: int
    last_depth: int | None
    last_rate: float | None


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (>= 1)."""
    if value <= 1:
        return 1.0
    scale = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return float(step * scale)
    return float(10 * scale)  # pragma: no cover - the loop always returns


def chart(pts: list[Point], now: float, window_s: float = KEEP * SAMPLE_EVERY_S,
          width: int = 760, height: int = 220) -> Chart:
    """Geometry of the depth (area and line) and delivery-rate (line) series."""
    left, right, top, bottom = 48, width - 56, 14, height - 28
    depth_max = nice_ceiling(max((p.depth for p in pts), default=0))
    rate_max = nice_ceiling(max((p.rate_per_min or 0.0 for p in pts), default=0.0))

    def x(t: float) -> float:
        return left + (right - left) * min(1.0, max(0.0, 1 - (now - t) / window_s))

    def y(v: float, top_value: float) -> float:
        return bottom - (bottom - top) * min(1.0, v / top_value)

    depth_line, depth_area, rate_line = [], [], []
    run: list[Point] = []
    runs = []
    for p in pts:
        if p.gap_before and run:
            runs.append(run)
            run = []
        run.append(p)
    if run:
        runs.append(run)
    for r in runs:
        coords = " L".join(f"{x(p.t):.1f},{y(p.depth, depth_max):.1f}" for p in r)
        depth_line.append(f"M{coords}")
        depth_area.append(f"M{x(r[0].t):.1f},{bottom} L{coords} L{x(r[-1].t):.1f},{bottom} Z")
        rated = [p for p in r if p.rate_per_min is not None]
        if rated:
            rate_line.append("M" + " L".join(
                f"{x(p.t):.1f},{y(p.rate_per_min or 0.0, rate_max):.1f}" for p in rated))
    ticks = [(x(now - m * 60), "now" if m == 0 else f"-{m} min")
             for m in range(int(window_s // 60), -1, -15)]
    last = pts[-1] if pts else None
    return Chart(width, height, left, right, top, bottom, " ".join(depth_line),
                 " ".join(depth_area), " ".join(rate_line), depth_max, rate_max, ticks,
                 len(pts), last.depth if last else None, last.rate_per_min if last else None)
