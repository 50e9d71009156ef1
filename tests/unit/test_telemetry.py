"""dispatcher.telemetry: the latency buckets and the shared histogram hash."""

from __future__ import annotations

import fakeredis
import pytest

from dispatcher.keys import Keys
from dispatcher.telemetry import LATENCY_BUCKETS, Telemetry, bucket_for


@pytest.mark.parametrize(("seconds", "bucket"), [
    (0.0, "0.005"),
    (0.005, "0.005"),  # a bound belongs to its own bucket (le)
    (0.0051, "0.01"),
    (0.3, "0.5"),
    (30.0, "30.0"),
    (30.1, "+Inf"),
])
def test_bucket_for_picks_the_smallest_upper_bound(seconds: float, bucket: str) -> None:
    assert bucket_for(seconds) == bucket


def test_the_buckets_ascend() -> None:
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))


def test_observations_add_up_per_outcome_in_one_hash(r: fakeredis.FakeRedis) -> None:
    t = Telemetry(r, "p")
    t.observe_latency(0.02, "delivered")
    t.observe_latency(0.03, "delivered")
    t.observe_latency(40.0, "retryable")

    latency = t.latency()

    assert latency["delivered"]["0.025"] == 1 and latency["delivered"]["0.05"] == 1
    assert latency["delivered"]["count"] == 2
    assert latency["delivered"]["sum"] == pytest.approx(0.05)
    assert latency["retryable"] == {"+Inf": 1, "count": 1, "sum": 40.0}
    assert "permanent" not in latency
    assert r.exists(Keys("p").latency) and not r.exists(Keys().latency)


def test_a_second_process_reads_the_same_histogram(r: fakeredis.FakeRedis) -> None:
    Telemetry(r).observe_latency(0.1, "permanent")

    assert Telemetry(r).latency()["permanent"]["count"] == 1
