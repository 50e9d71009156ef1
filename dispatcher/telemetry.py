"""Telemetry kept in Redis: the CAD request latency histogram, shared by every worker.

Buckets are stored per bucket (not cumulative) in one hash, with the sum and count, so
any number of worker processes add to the same histogram and it survives restarts; the
web process renders it as a Prometheus histogram.
"""

from __future__ import annotations

import bisect

import redis

from dispatcher import scripts
from dispatcher.keys import Keys

#: Upper bounds (seconds) of the latency buckets; the CAD answers in tens of ms when well.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def bucket_for(seconds: float) -> str:
    """The histogram bucket (upper bound) a duration falls in."""
    i = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return "+Inf" if i == len(LATENCY_BUCKETS) else repr(LATENCY_BUCKETS[i])


class Telemetry:
    """Records observations into Redis hashes."""

    def __init__(self, client: redis.Redis, prefix: str = "dispatcher") -> None:
        self.client = client
        self.key = Keys(prefix).latency
        # One script call: the bucket, the sum and the count change together (the same
        # lua/_observe.lua the outcome scripts use).
        self._observe = scripts.register(client, "observe.lua")

    def observe_latency(self, seconds: float, outcome: str) -> None:
        """One CAD request's duration; ``outcome`` is delivered/retryable/permanent.

        The worker records its observations inside the outcome scripts instead
        (`Lifecycle.delivered` and friends, via ``lua/_observe.lua``); this is kept for
        the ops tests, which fill the histogram without running a worker.
        """
        self._observe(keys=[self.key], args=[outcome, bucket_for(seconds), repr(seconds)])

    def latency(self) -> dict[str, dict[str, float]]:
        """{outcome: {"<le>": n (non-cumulative), "count": n, "sum": s}}."""
        out: dict[str, dict[str, float]] = {}
        for raw_key, raw_value in self.client.hgetall(self.key).items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            outcome, _, field = key.partition(":")
            out.setdefault(outcome, {})[field] = float(raw_value)
        return out
