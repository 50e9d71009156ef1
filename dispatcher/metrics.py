"""Prometheus metrics, read from Redis at scrape time.

Every number lives in Redis (counters in one hash, depths in the sorted sets), so the
figures add up across any number of worker processes and survive restarts; the web
process only renders them.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from dispatcher.records import Records

CIRCUIT_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class DispatcherCollector(Collector):
    """Collects queue depths, ages, counters and breaker state at each scrape."""

    def __init__(self, client: redis.Redis, prefix: str = "dispatcher") -> None:
        self.records = Records(client, prefix)

    def collect(self) -> Iterator[Metric]:
        s = self.records.stats()
        for name, help_text, value in (
            ("dispatcher_queued_calls", "Calls waiting to be sent", s["queued"]),
            ("dispatcher_scheduled_calls", "Calls waiting to retry", s["scheduled"]),
            ("dispatcher_in_flight_calls", "Calls being sent now", s["in_flight"]),
            ("dispatcher_dead_letters", "Dead letters waiting for an operator", s["dead"]),
            ("dispatcher_oldest_call_age_seconds", "Age of the oldest undelivered call",
             s["oldest_age_s"] or 0.0),
            ("dispatcher_rate_limit_pause_seconds", "Time left of a 429 pause",
             s["rate_limit_pause_s"]),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)
        circuit = GaugeMetricFamily("dispatcher_circuit_state",
                                    "Breaker state: 0 closed, 1 half open, 2 open",
                                    value=CIRCUIT_VALUE.get(s["circuit"], 2))
        yield circuit
        for name, help_text, value in (
            ("dispatcher_enqueued", "Calls enqueued", s["enqueued"]),
            ("dispatcher_delivered", "Calls delivered to the CAD", s["delivered"]),
            ("dispatcher_retries", "Retryable failures (each schedules a retry)", s["retried"]),
            ("dispatcher_rate_limited", "429 answers from the CAD", s["rate_limited"]),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        dead = CounterMetricFamily("dispatcher_dead_lettered",
                                   "Calls that became dead letters", labels=["reason"])
        for reason, value in sorted(s["dead_by_reason"].items()):
            dead.add_metric([reason], value)
        yield dead


def registry_for(client: redis.Redis, prefix: str = "dispatcher") -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DispatcherCollector(client, prefix))
    return registry
