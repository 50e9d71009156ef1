"""Prometheus metrics, read from Redis at scrape time.

Every number lives in Redis (counters in one hash, depths in the sorted sets, the CAD
latency histogram in its own hash, heartbeats in theirs), so the figures add up across
any number of worker processes and survive restarts; the web process only renders
them. Nothing here uses prometheus-client's in-process state or multiprocess mode.
When Redis does not answer, the scrape fails (``/metrics`` answers 503), so
Prometheus' own ``up`` is 0: there is nothing true to report without Redis.

Exposed (all prefixed ``dispatcher_``):

==========================================  =========  ==================================
name                                        type       meaning
==========================================  =========  ==================================
queued_calls                                gauge      calls waiting to be sent
scheduled_calls                             gauge      calls waiting to retry
in_flight_calls                             gauge      calls being sent now
verifying_calls                             gauge      calls whose send's outcome is unknown,
                                                       waiting for the CAD's list (read-back)
readback_available                          gauge      1 while the CAD's list can be read
dead_letters                                gauge      dead letters waiting for an operator
oldest_call_age_seconds                     gauge      age of the oldest undelivered call
calls_enqueued_total                        counter    calls accepted
calls_unknown_fields_total                  counter    fields of accepted calls we do not
                                                       know (kept, sent to the CAD as given)
calls_delivered_total                       counter    calls the CAD accepted
calls_retried_total                         counter    retryable failures (each a retry)
calls_dead_lettered_total{reason}           counter    calls that became dead letters
dead_letters_replayed_total                 counter    dead letters put back in line
dead_letters_purged_total                   counter    dead letters deleted by an operator
invalid_summarised_total                    counter    invalid entries summarised (cap)
cad_request_duration_seconds{outcome}       histogram  CAD request latency
circuit_state{state}                        gauge      1 for the breaker's current state
circuit_opened_total                        counter    times the breaker opened
rate_limit_waits_total                      counter    sends put back for a later slot
rate_limit_pauses_total                     counter    429 answers (each pauses all)
rate_limit_pause_remaining_seconds          gauge      time left of the current 429 pause
leases_expired_total                        counter    sends recovered from dead workers
readbacks_total                             counter    read-backs of the CAD's list done
verified_total{found}                       counter    verifying calls settled: found in the
                                                       CAD (delivered) or not (sent again)
possible_duplicates_total                   counter    unknown outcomes re-sent without a
                                                       read-back (it was unavailable)
calls_cancelled_total                       counter    calls taken back before they were sent
calls_removed_total                         counter    delivered calls removed from the CAD
orphans_recovered_total                     counter    lost messages re-published
workers_alive                               gauge      workers with a recent heartbeat
redis_memory_used_bytes                     gauge      Redis used_memory (INFO memory)
redis_memory_max_bytes                      gauge      Redis maxmemory (0 = no limit)
==========================================  =========  ==================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from dispatcher.deadletters import DeadReason
from dispatcher.heartbeat import Heartbeats
from dispatcher.records import Records
from dispatcher.telemetry import LATENCY_BUCKETS, Telemetry

#: Breaker states, each one series of ``dispatcher_circuit_state`` (the enum convention).
CIRCUIT_STATES = ("closed", "half_open", "open")
#: Dead-letter reasons always exposed, so a rate() over them exists before the first one.
KNOWN_REASONS: tuple[DeadReason, ...] = get_args(DeadReason)
#: Outcomes of a CAD request, always exposed for the same reason.
OUTCOMES = ("delivered", "retryable", "permanent")

# (metric name without _total, counters-hash field, help)
_COUNTERS = (
    ("dispatcher_calls_enqueued", "enqueued", "Calls accepted into the queue"),
    ("dispatcher_calls_unknown_fields", "unknown_fields",
     "Fields of accepted calls that the dispatcher does not know (kept and sent as given)"),
    ("dispatcher_calls_delivered", "delivered", "Calls the CAD accepted"),
    ("dispatcher_calls_retried", "retried",
     "Retryable CAD failures (network, timeout, 5xx, 408), each scheduling a retry"),
    ("dispatcher_dead_letters_replayed", "replayed", "Dead letters put back in line"),
    ("dispatcher_dead_letters_purged", "purged", "Dead letters deleted by an operator"),
    ("dispatcher_invalid_summarised", "invalid_summarised",
     "Invalid inbox entries beyond DISPATCHER_MAX_INVALID summarised (records dropped)"),
    ("dispatcher_circuit_opened", "circuit_opened", "Times the CAD circuit breaker opened"),
    ("dispatcher_rate_limit_waits", "rate_limit_waits",
     "Sends put back in line because the shared rate limit had no slot soon enough"),
    ("dispatcher_rate_limit_pauses", "rate_limited",
     "429 answers from the CAD; each pauses every sender for its Retry-After"),
    ("dispatcher_leases_expired", "leases_expired",
     "Calls recovered from a worker that died while sending them"),
    ("dispatcher_orphans_recovered", "orphans_recovered",
     "Calls whose queue message was lost and re-published"),
    ("dispatcher_readbacks", "readbacks", "Read-backs of the CAD's list of calls done"),
    ("dispatcher_possible_duplicates", "possible_duplicates",
     "Sends whose outcome was unknown, re-sent without a read-back (it was unavailable)"),
    ("dispatcher_calls_cancelled", "cancelled", "Calls taken back before they were sent"),
    ("dispatcher_calls_removed", "removed", "Delivered calls removed from the CAD"),
)


class DispatcherCollector(Collector):
    """Collects queue depths, ages, counters, latency, breaker and workers at each scrape.

    With several communities (``communities``: name -> key prefix) every series of a
    community carries a ``community`` label; with one, the series have no such label,
    as before.
    """

    def __init__(self, client: redis.Redis, prefix: str = "dispatcher",
                 communities: dict[str, str] | None = None) -> None:
        self.client = client
        self.communities = communities if communities and len(communities) > 1 else None
        prefixes = self.communities or {"": prefix}
        self.sources = [(name, Records(client, p), Telemetry(client, p))
                        for name, p in prefixes.items()]
        self.records = self.sources[0][1]
        self.heartbeats = Heartbeats(client, prefix)

    def collect(self) -> Iterator[Metric]:
        # A RedisError propagates: /metrics answers 503 and Prometheus records up == 0.
        extra = ["community"] if self.communities else []
        each = [([name] if extra else [], records.stats(), self._counters(records),
                 telemetry.latency()) for name, records, telemetry in self.sources]
        alive = len(self.heartbeats.alive())
        memory = redis_memory(self.client)
        yield from _gauges([(who, stats) for who, stats, _, _ in each], extra)
        yield GaugeMetricFamily("dispatcher_workers_alive", "Workers whose heartbeat is recent",
                                value=alive)
        if memory is not None:
            yield GaugeMetricFamily("dispatcher_redis_memory_used_bytes",
                                    "Memory Redis uses (INFO used_memory)", value=memory[0])
            yield GaugeMetricFamily("dispatcher_redis_memory_max_bytes",
                                    "Redis maxmemory; 0 means no limit", value=memory[1])
        for name, field, help_text in _COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=extra)
            for who, _, counters, _ in each:
                family.add_metric(who, counters.get(field, 0))
            yield family
        dead = CounterMetricFamily("dispatcher_calls_dead_lettered",
                                   "Calls that became dead letters, by reason",
                                   labels=[*extra, "reason"])
        verified = CounterMetricFamily(
            "dispatcher_verified", "Verifying calls settled by a read-back: found in the "
            "CAD's list (delivered, not re-sent) or not (sent again)", labels=[*extra, "found"])
        for who, _, counters, _ in each:
            by_reason: dict[str, int] = {r: 0 for r in KNOWN_REASONS}
            by_reason.update({k[5:]: v for k, v in counters.items() if k.startswith("dead:")})
            for reason, value in sorted(by_reason.items()):
                dead.add_metric([*who, reason], value)
            verified.add_metric([*who, "true"], counters.get("verified_found", 0))
            verified.add_metric([*who, "false"], counters.get("verified_missing", 0))
        yield dead
        yield verified
        yield latency_histogram([(who, latency) for who, _, _, latency in each], extra)

    def _counters(self, records: Records) -> dict[str, int]:
        raw: dict[Any, Any] = self.client.hgetall(records.keys.counters)
        out = {}
        for key, value in raw.items():
            try:
                out[key.decode() if isinstance(key, bytes) else str(key)] = int(value)
            except ValueError:
                continue
        return out


def _gauges(each: list[tuple[list[str], dict[str, Any]]], extra: list[str]
            ) -> Iterator[Metric]:
    rows = (
        ("dispatcher_queued_calls", "Calls waiting to be sent", lambda s: s["queued"]),
        ("dispatcher_scheduled_calls", "Calls waiting to retry", lambda s: s["scheduled"]),
        ("dispatcher_in_flight_calls", "Calls being sent to the CAD now",
         lambda s: s["in_flight"]),
        ("dispatcher_verifying_calls", "Calls whose send's outcome is unknown, waiting for "
         "the CAD's list to be read back", lambda s: s["verifying"]),
        ("dispatcher_readback_available", "1 while the CAD's list of calls can be read "
         "(unknown outcomes are then checked before a re-send)",
         lambda s: 1 if s["readback"] == "available" else 0),
        ("dispatcher_dead_letters", "Dead letters waiting for an operator", lambda s: s["dead"]),
        ("dispatcher_oldest_call_age_seconds",
         "Age of the oldest undelivered call (0 when none waits)",
         lambda s: s["oldest_age_s"] or 0.0),
        ("dispatcher_rate_limit_pause_remaining_seconds",
         "Time left of the current 429 pause (0 when none)", lambda s: s["rate_limit_pause_s"]),
    )
    for name, help_text, pick in rows:
        family = GaugeMetricFamily(name, help_text, labels=extra)
        for who, stats in each:
            family.add_metric(who, pick(stats))
        yield family
    circuit = GaugeMetricFamily("dispatcher_circuit_state",
                                "CAD circuit breaker: 1 for the current state",
                                labels=[*extra, "state"])
    for who, stats in each:
        for state in CIRCUIT_STATES:
            circuit.add_metric([*who, state], 1 if stats["circuit"] == state else 0)
    yield circuit


def latency_histogram(each: list[tuple[list[str], dict[str, dict[str, float]]]],
                      extra: list[str]) -> HistogramMetricFamily:
    """Telemetry's per-bucket (non-cumulative) counts as a cumulative Prometheus histogram."""
    family = HistogramMetricFamily("dispatcher_cad_request_duration_seconds",
                                   "Duration of CAD requests, by outcome",
                                   labels=[*extra, "outcome"])
    for who, latency in each:
        _observations(family, who, latency)
    return family


def _observations(family: HistogramMetricFamily, who: list[str],
                  latency: dict[str, dict[str, float]]) -> None:
    for outcome in sorted(set(OUTCOMES) | set(latency)):
        fields = latency.get(outcome, {})
        buckets = []
        running = 0.0
        for bound in LATENCY_BUCKETS:
            running += fields.get(repr(bound), 0.0)
            buckets.append((floatToGoString(bound), running))
        running += fields.get("+Inf", 0.0)
        # The count is written by the same atomic script as the bucket (lua/_observe.lua),
        # so the two agree; +Inf is the buckets' own total either way.
        buckets.append(("+Inf", running))
        family.add_metric([*who, outcome], buckets, sum_value=fields.get("sum", 0.0))


def redis_memory(client: redis.Redis) -> tuple[int, int] | None:
    """(used, max) bytes of Redis, or None where INFO is not allowed (managed Redis)."""
    try:
        info: Any = client.info("memory")
    except redis.ResponseError:
        return None
    return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))


def registry_for(client: redis.Redis, prefix: str = "dispatcher",
                 communities: dict[str, str] | None = None) -> CollectorRegistry:
    """A registry holding only our collector (no process or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DispatcherCollector(client, prefix, communities))
    return registry
