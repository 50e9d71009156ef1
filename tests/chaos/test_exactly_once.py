"""Exactly once in the CAD, with real processes: answers lost after the CAD created the
call, workers killed mid-POST, a CAD without read-back, and calls taken back at every
moment. The simulator's ``duplicate_tags`` counts CAD calls that repeat one of our ids
(``metaData.dispatcherCallId``): a duplicate 911 call on the dispatchers' screens.
Figures are printed and written to build/chaos/<test>.json (docs/RELIABILITY.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from dispatcher.call import Call
from dispatcher.producer import Producer
from dispatcher.records import Records
from dispatcher.simulator import CadSimulator
from dispatcher.takeback import TakeBacks
from tests.chaos.test_chaos import report
from tests.conftest import Proc, base_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request: pytest.FixtureRequest) -> int:
    return int(request.param)



def call(i: int) -> Call:
    return Call.create(caller=f"Caller {i}", location=f"{i} Route 68",
                       description=f"exactly once {i}", postal=str(i))


def records(url: str) -> Records:
    return Records(redis.Redis.from_url(url, socket_connect_timeout=1))


def by_tag(sim: CadSimulator) -> dict[str, list[int]]:
    """Our id -> the CAD ids created with it."""
    out: dict[str, list[int]] = {}
    for c in sim.calls():
        tag = (c["call"].get("metaData") or {}).get("dispatcherCallId")
        if tag:
            out.setdefault(tag, []).append(c["cad_id"])
    return out


def env_for(redis_url: str, sim: CadSimulator, version: int, **extra: Any) -> dict[str, str]:
    settings: dict[str, Any] = {"SONORAN_API_VERSION": version, "DISPATCHER_READ_TIMEOUT_S": 1,
                                "DISPATCHER_CIRCUIT_COOLDOWN_S": 1,
                                "DISPATCHER_CIRCUIT_MAX_COOLDOWN_S": 2}
    return base_env(redis_url, sim, **{**settings, **extra})


def test_answers_lost_after_the_cad_created_the_call_make_no_duplicate(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], version: int,
) -> None:
    n = 12
    env = env_for(redis_url, sim, version)
    procs(["scheduler"], env)
    procs(["worker"], env)
    producer = producer_for(env)
    # The reproduction: 3 answers hang past the read timeout and 3 connections are
    # reset, each after the CAD created the call.
    sim.set_fault("commit_then_hang", count=3, route="create", max_s=30)
    ids = [producer.enqueue(call(i)) for i in range(3)]
    wait_for(lambda: records(redis_url).stats()["verifying"] + records(redis_url).stats()[
        "delivered"] >= 3, 30, message="three sends whose answer was lost")
    sim.set_fault("commit_then_drop", count=3, route="create")
    ids += [producer.enqueue(call(i)) for i in range(3, n)]
    started = time.time()
    wait_for(lambda: records(redis_url).stats()["delivered"] == n, 120, 0.2,
             message="all delivered")
    settled_s = time.time() - started
    tags = by_tag(sim)
    stats = records(redis_url).stats()
    s = sim.stats()
    report(f"lost_answers_v{version}", calls=n, created=s["created"],
           duplicates=s["duplicate_tags"], verified_found=stats["verified_found"],
           verified_missing=stats["verified_missing"], settled_s=round(settled_s, 1))
    assert s["duplicate_tags"] == 0 and s["created"] == n
    assert stats["verified_found"] == 6, "the six lost answers were found in the CAD's list"
    for call_id in ids:
        record = records(redis_url).get(call_id)
        assert record is not None and record.status == "delivered"
        assert tags[call_id] == [int(record.cad_call_id or 0)], "the CAD's own id, recorded"


def test_workers_killed_during_posts_the_cad_completes_make_no_duplicate(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], version: int,
) -> None:
    n = 16
    sim.set_latency(1500)  # every POST open for 1.5 s; the CAD completes it regardless
    env = env_for(redis_url, sim, version, DISPATCHER_READ_TIMEOUT_S=5, DISPATCHER_CONCURRENCY=16)
    procs(["scheduler"], env)
    worker = procs(["worker"], env, name="worker")
    producer = producer_for(env)
    ids = [producer.enqueue(call(i)) for i in range(n)]
    wait_for(lambda: sim.stats()["unanswered"] >= n, 30, 0.01, message="16 open POSTs")
    worker.kill()
    sim.set_latency(0)
    procs(["worker"], env, name="worker")
    started = time.time()
    wait_for(lambda: records(redis_url).stats()["delivered"] == n, 180, 0.5,
             message="all delivered")
    s, stats = sim.stats(), records(redis_url).stats()
    report(f"sigkill_all_workers_mid_post_v{version}", calls=n, created=s["created"],
           duplicates=s["duplicate_tags"], verified_found=stats["verified_found"],
           settled_s=round(time.time() - started, 1))
    assert s["duplicate_tags"] == 0 and s["created"] == n
    tags = by_tag(sim)
    assert all(tags[i] == [int(records(redis_url).get(i).cad_call_id or 0)]  # type: ignore[union-attr]
               for i in ids)


def test_without_read_back_it_falls_back_and_counts_possible_duplicates(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], version: int,
) -> None:
    n = 6
    sim.set_readback(enabled=False)  # v1 without the Plus plan; v2: a permanent refusal
    env = env_for(redis_url, sim, version)
    procs(["scheduler"], env)
    worker = procs(["worker"], env)
    producer = producer_for(env)
    sim.set_fault("commit_then_drop", count=2, route="create")
    for i in range(n):
        producer.enqueue(call(i))
    wait_for(lambda: records(redis_url).stats()["delivered"] == n, 120, 0.2,
             message="all delivered")
    stats, s = records(redis_url).stats(), sim.stats()
    report(f"readback_unavailable_v{version}", calls=n, duplicates=s["duplicate_tags"],
           possible_duplicates=stats["possible_duplicates"], readback=stats["readback"])
    assert stats["readback"] == "unavailable"
    assert s["duplicate_tags"] == 2 == stats["possible_duplicates"], "counted, as they happen"
    assert "cannot be read" in worker.output()


def test_taking_calls_back_leaves_exactly_the_expected_cad_state(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], version: int,
) -> None:
    env = env_for(redis_url, sim, version)
    procs(["scheduler"], env)
    procs(["worker"], env)
    producer = producer_for(env)
    client = redis.Redis.from_url(redis_url)
    tb = TakeBacks(client, "dispatcher")
    rec = records(redis_url)

    # After delivery: removed from the CAD.
    delivered = producer.enqueue(call(1))
    wait_for(lambda: rec.get(delivered).status == "delivered", 30)  # type: ignore[union-attr]
    assert tb.remove(delivered)[1] == "removing"
    wait_for(lambda: rec.get(delivered).status == "removed", 30)  # type: ignore[union-attr]

    # Racing its send (the POST is open): removed once the CAD answers.
    sim.set_latency(1500)
    racing = producer.enqueue(call(2))
    wait_for(lambda: sim.stats()["unanswered"] >= 1, 30, 0.01, message="an open POST")
    assert tb.remove(racing)[1] == "pending"
    sim.set_latency(0)
    wait_for(lambda: rec.get(racing).status == "removed", 60)  # type: ignore[union-attr]

    # During an outage: never sent (waiting) / removed once the CAD is back (delivered).
    sim.set_fault("refuse")
    waiting = producer.enqueue(call(3))
    wait_for(lambda: rec.get(waiting).status == "scheduled"  # type: ignore[union-attr]
             or rec.stats()["circuit"] != "closed", 30)
    assert tb.remove(waiting)[1] == "cancelled"
    kept = producer.enqueue(call(4))
    sim.clear_faults()
    wait_for(lambda: rec.get(kept).status == "delivered", 60)  # type: ignore[union-attr]
    sim.set_fault("refuse")
    assert tb.remove(kept)[1] == "removing"
    time.sleep(3)
    assert rec.get(kept).status == "removing"  # type: ignore[union-attr]
    sim.clear_faults()
    wait_for(lambda: rec.get(kept).status == "removed", 60)  # type: ignore[union-attr]

    tags = by_tag(sim)
    active = {(c.get("metaData") or {}).get("dispatcherCallId") for c in sim.active()}
    report(f"take_back_v{version}", created=len(sim.calls()), active=len(active),
           duplicates=sim.stats()["duplicate_tags"])
    assert waiting not in tags, "cancelled before it was sent: the CAD never saw it"
    assert {delivered, racing, kept} <= set(tags), "each was created once..."
    assert not active & {delivered, racing, kept}, "...and removed"
    assert sim.stats()["duplicate_tags"] == 0
