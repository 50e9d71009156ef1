"""Chaos: real processes killed at bad moments, a Redis that dies, a CAD that misbehaves.

Every test asserts zero calls lost and zero duplicates: a send whose outcome is unknown
(a worker killed mid-POST, an answer lost) is checked in the CAD's list before any
re-send (dispatcher.readback; tests/chaos/test_exactly_once.py has the dedicated cases).
Figures are printed and written to build/chaos/<test>.json; docs/RELIABILITY.md tables them.
Run: scripts/test tests/chaos -s
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher.call import Call
from dispatcher.errors import QueueUnavailable
from dispatcher.producer import Producer
from dispatcher.records import Records
from dispatcher.simulator import CadSimulator
from tests.conftest import ROOT, Proc, RedisServer, base_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request: pytest.FixtureRequest) -> int:
    """Every chaos test runs against both CAD API versions."""
    return int(request.param)


def report(name: str, **figures: Any) -> None:
    out = ROOT / "build" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2))
    print(f"\n[chaos] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def make(i: int, key: bool = False) -> Call:
    return Call.create(caller=f"Caller {i}", location=f"{i} Route 68", description=f"call {i}",
                       postal=str(i), idempotency_key=f"chaos-{i}" if key else None)


def stats(url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return Records(client).stats()
    finally:
        client.close()


def delivered_callers(sim: CadSimulator) -> Counter[str]:
    return Counter(c["call"]["caller"] for c in sim.calls())



def test_sigkill_worker_mid_post_repeatedly_loses_nothing(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], version: int,
) -> None:
    n, kills = 1000, 8
    sim.set_latency(25)  # a POST stays open long enough to be killed in the middle of
    # 8 threads: a kill strands at most the 8 calls whose POST is open at that moment.
    env = base_env(redis_url, sim, SONORAN_API_VERSION=version, DISPATCHER_READ_TIMEOUT_S=2,
                   DISPATCHER_CONCURRENCY=8)
    procs(["scheduler"], env)
    worker = procs(["worker"], env, name="worker")
    producer = producer_for(env)
    for i in range(n):
        producer.enqueue(make(i))
    killed_mid_post = 0
    for _ in range(kills):
        wait_for(lambda: len(sim.calls()) > 0, 30, message="progress")
        time.sleep(0.5)
        wait_for(lambda: sim.stats()["unanswered"] > 0, 10, 0.001, message="an open POST")
        worker.kill()
        killed_mid_post += 1
        worker = procs(["worker"], env, name="worker")
    wait_for(lambda: stats(redis_url)["delivered"] == n, 240, 0.5, message="all delivered")
    got = delivered_callers(sim)
    lost = [i for i in range(n) if got[f"Caller {i}"] == 0]
    duplicates = sum(v - 1 for v in got.values() if v > 1)
    report(f"sigkill_worker_mid_post_v{version}", calls=n, kills=killed_mid_post, lost=len(lost),
           duplicates=duplicates, leases_expired=_counter(redis_url, "leases_expired"),
           verified_found=_counter(redis_url, "verified_found"))
    assert lost == []
    # The calls whose POST was open at a kill were checked in the CAD's list, not re-sent.
    assert duplicates == 0


def test_sigterm_finishes_the_call_in_flight_and_loses_nothing(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], version: int,
) -> None:
    n = 200
    sim.set_latency(50)
    env = base_env(redis_url, sim, SONORAN_API_VERSION=version)
    procs(["scheduler"], env)
    worker = procs(["worker"], env)
    producer = producer_for(env)
    for i in range(n):
        producer.enqueue(make(i))
    wait_for(lambda: sim.stats()["unanswered"] > 0, 30, 0.001, message="an open POST")
    started = time.time()
    worker.signal(signal.SIGTERM)
    worker.proc.wait(30)
    shutdown_s = time.time() - started
    assert worker.proc.returncode == 0, worker.output()[-2000:]
    in_flight_after = stats(redis_url)["in_flight"]
    procs(["worker"], env)
    wait_for(lambda: stats(redis_url)["delivered"] == n, 120, 0.5, message="all delivered")
    got = delivered_callers(sim)
    duplicates = sum(v - 1 for v in got.values() if v > 1)
    report(f"sigterm_worker_v{version}", calls=n, shutdown_s=round(shutdown_s, 2),
           in_flight_after_shutdown=in_flight_after, lost=n - len(got), duplicates=duplicates)
    assert len(got) == n
    assert in_flight_after == 0, "SIGTERM left a call mid-send"
    assert duplicates == 0


def test_sigkill_scheduler_and_restart(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], version: int,
) -> None:
    n = 300
    env = base_env(redis_url, sim, SONORAN_API_VERSION=version, DISPATCHER_MAX_RATE=100)
    scheduler = procs(["scheduler"], env)
    procs(["worker"], env)
    producer = producer_for(env)
    for i in range(n):
        producer.enqueue(make(i))
    for _ in range(3):
        time.sleep(0.7)
        scheduler.kill()
        scheduler = procs(["scheduler"], env)
    wait_for(lambda: stats(redis_url)["delivered"] == n, 120, 0.5, message="all delivered")
    got = delivered_callers(sim)
    report(f"sigkill_scheduler_v{version}", calls=n, lost=n - len(got),
           duplicates=sum(v - 1 for v in got.values() if v > 1))
    assert len(got) == n and sum(got.values()) == n


def test_redis_killed_and_restarted_mid_run(
    sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], tmp_path: Path, version: int,
) -> None:
    server = RedisServer(appendonly=True, fsync="always").start()
    try:
        env = base_env(server.url, sim, SONORAN_API_VERSION=version, DISPATCHER_MAX_RATE=50)
        scheduler = procs(["scheduler"], env)
        worker = procs(["worker"], env)
        producer = producer_for(env)
        n = 300
        ids: dict[int, str] = {}
        failures = Counter[str]()
        done = threading.Event()

        def produce() -> None:
            for i in range(n):
                while True:  # what a careful producer does: retry with the same key
                    try:
                        ids[i] = producer.enqueue(make(i, key=True))
                        break
                    except QueueUnavailable:
                        failures["queue_unavailable"] += 1
                        time.sleep(0.2)
                time.sleep(0.01)
            done.set()

        t = threading.Thread(target=produce)
        t.start()
        restarts = 0
        for _ in range(2):
            time.sleep(1.5)
            server.kill()
            time.sleep(2.0)
            server.start()
            restarts += 1
        t.join(120)
        assert done.is_set()
        wait_for(lambda: stats(server.url)["delivered"] >= n, 180, 0.5, message="all delivered")
        got = delivered_callers(sim)
        duplicates = sum(v - 1 for v in got.values() if v > 1)
        report(f"redis_kill_restart_v{version}", calls=n, redis_restarts=restarts,
               lost=n - len(got), duplicates=duplicates,
               producer_retries=failures["queue_unavailable"])
        assert len(got) == n
        assert len(set(ids.values())) == n
        # Nobody restarted them: each process rode out both Redis restarts by itself.
        assert worker.alive() and scheduler.alive()
        assert "Unrecoverable error" not in worker.output()
    finally:
        server.stop()


def test_worker_reconnects_promptly_after_a_long_redis_outage(
    sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer],
) -> None:
    # kombu's own reconnect backs off 2, 4, 6 ... 30 s apart: after this 15 s outage the
    # worker would wake only 5 s after Redis is back. Ours retries every 2 s at most.
    server = RedisServer(appendonly=True, fsync="always").start()
    try:
        env = base_env(server.url, sim)
        worker = procs(["worker"], env)
        procs(["scheduler"], env)
        producer = producer_for(env)
        producer.enqueue(make(0))
        wait_for(lambda: len(sim.calls()) == 1, 60, message="the first call")
        server.kill()
        time.sleep(15)
        server.start()
        back = time.monotonic()
        producer.enqueue(make(1))
        wait_for(lambda: len(sim.calls()) == 2, 60, 0.05, message="the call after the outage")
        took = time.monotonic() - back
        report("worker_reconnects_promptly", outage_s=15, delivered_after_s=round(took, 2))
        # The bound is the guarantee under test, not a timing guess: the worker retries its
        # connection every 2 s at most (workers.app.RECONNECT_INTERVALS; kombu alone wakes
        # ~5 s after Redis is back here), so 4 s is that cap plus 2 s for the enqueue, the
        # scheduler's release and the delivery on a loaded machine.
        assert took < 4.0, f"{took:.1f}s from Redis back to the call delivered"
        assert worker.alive()
    finally:
        server.stop()


def test_outage_longer_than_the_visibility_timeout(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], version: int,
) -> None:
    n = 100
    env = base_env(redis_url, sim, SONORAN_API_VERSION=version,
                   DISPATCHER_VISIBILITY_TIMEOUT_S=3, DISPATCHER_MAX_RATE=10,
                   DISPATCHER_CIRCUIT_COOLDOWN_S=1, DISPATCHER_CIRCUIT_MAX_COOLDOWN_S=2,
                   DISPATCHER_ORPHAN_AFTER_S=5)
    procs(["scheduler"], env)
    procs(["worker"], env)
    sim.set_fault("refuse")
    producer = producer_for(env)
    for i in range(n):
        producer.enqueue(make(i))
    wait_for(lambda: stats(redis_url)["circuit"] in ("open", "half_open"), 30,
             message="the breaker opens")
    time.sleep(15)  # five visibility timeouts
    during = stats(redis_url)
    sim.clear_faults()
    wait_for(lambda: stats(redis_url)["delivered"] == n, 120, 0.5, message="all delivered")
    got = delivered_callers(sim)
    order = [int(c["call"]["caller"].split()[1]) for c in sim.calls()]
    report(f"outage_longer_than_visibility_timeout_v{version}", calls=n, outage_s=15,
           visibility_timeout_s=3, lost=n - len(got),
           duplicates=sum(v - 1 for v in got.values() if v > 1),
           held_during_outage=during["queued"] + during["scheduled"],
           out_of_order=sum(1 for a, b in zip(order, order[1:], strict=False) if b < a),
           max_displacement=displacement(order))
    assert len(got) == n and sum(got.values()) == n
    # Oldest first: released in enqueue order; only calls sent in the same instant by
    # parallel worker threads may swap places.
    assert displacement(order) <= 8, order


def test_hanging_cad(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], version: int,
) -> None:
    n = 30
    env = base_env(redis_url, sim, SONORAN_API_VERSION=version, DISPATCHER_READ_TIMEOUT_S=1,
                   DISPATCHER_CIRCUIT_COOLDOWN_S=1, DISPATCHER_CIRCUIT_MAX_COOLDOWN_S=2)
    procs(["scheduler"], env)
    procs(["worker"], env)
    sim.set_fault("hang", max_s=60)
    producer = producer_for(env)
    for i in range(n):
        producer.enqueue(make(i))
    wait_for(lambda: stats(redis_url)["retried"] >= 3, 30, message="timeouts")
    time.sleep(5)
    sim.clear_faults()
    wait_for(lambda: stats(redis_url)["delivered"] == n, 120, 0.5, message="all delivered")
    got = delivered_callers(sim)
    report(f"hanging_cad_v{version}", calls=n, lost=n - len(got),
           duplicates=sum(v - 1 for v in got.values() if v > 1),
           timeouts=stats(redis_url)["retried"])
    assert len(got) == n and sum(got.values()) == n


@pytest.mark.parametrize("our_rate, cad_rate", [(2.0, 2), (4.0, 2)])
def test_rate_limiting_cad(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer], our_rate: float, cad_rate: int,
    version: int,
) -> None:
    n = 24
    # The CAD counts requests over a window of several intervals (v2's limit is per
    # minute); a single gap a few ms short of 1/rate from scheduling jitter is not a
    # breach there, but any sustained excess is.
    sim.set_rate_limit(cad_rate * 5, window_s=5.0, retry_after=1)
    env = base_env(redis_url, sim, SONORAN_API_VERSION=version, DISPATCHER_MAX_RATE=our_rate)
    procs(["scheduler"], env)
    procs(["worker"], env)
    producer = producer_for(env)
    started = time.time()
    for i in range(n):
        producer.enqueue(make(i))
    wait_for(lambda: stats(redis_url)["delivered"] == n, 120, 0.2, message="all delivered")
    elapsed = time.time() - started
    got = delivered_callers(sim)
    statuses = sim.stats()["by_status"]
    arrivals = [c["at"] for c in sim.calls()]
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    report(f"rate_limit_ours_{our_rate:g}_cad_{cad_rate}_v{version}", calls=n,
           answered_429=statuses.get("429", 0), achieved_rate=round(achieved, 3),
           elapsed_s=round(elapsed, 1), lost=n - len(got),
           duplicates=sum(v - 1 for v in got.values() if v > 1))
    assert len(got) == n and sum(got.values()) == n
    if our_rate <= cad_rate:
        assert statuses.get("429", 0) == 0, "we exceeded a rate we were told to keep"
        assert achieved <= our_rate * 1.02
        assert achieved >= our_rate * 0.85, "capacity left unused with a backlog"
    else:
        assert statuses.get("429", 0) >= 1


def displacement(order: list[int]) -> int:
    """How far any call arrived from its place in enqueue order."""
    rank = {v: i for i, v in enumerate(sorted(order))}
    return max((abs(rank[v] - i) for i, v in enumerate(order)), default=0)


def _counter(url: str, name: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.hget("dispatcher:counters", name) or 0)
    finally:
        client.close()


def test_sigkill_bridge_mid_move_neither_loses_nor_doubles(
    redis_url: str, procs: Callable[..., Proc], version: int,
) -> None:
    n = 4000
    env = base_env(redis_url, None, SONORAN_API_VERSION=version)
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush("dispatcher:inbox", json.dumps(
            {"caller": f"Caller {i}", "location": "Route 68", "description": "Crash"}))
    pipe.execute()
    bridge = procs(["bridge"], env, name="bridge")
    kills = 0
    for round_ in range(5):
        target = n - 300 * (round_ + 1)
        wait_for(lambda t=target: client.llen("dispatcher:inbox") < t or  # type: ignore[misc]
                 client.llen("dispatcher:inbox") == 0, 60, 0.005, message="progress")
        bridge.kill()
        kills += 1
        bridge = procs(["bridge"], env, name="bridge")
    wait_for(lambda: client.llen("dispatcher:inbox") == 0 and
             client.llen("dispatcher:inbox:processing") == 0, 120, message="inbox drained")
    records = Records(client).get_many([i.decode() for i in client.zrange(
        "dispatcher:pending", 0, -1)])
    callers = Counter(r.call["caller"] for r in records)
    report(f"sigkill_bridge_v{version}", entries=n, kills=kills, lost=n - len(callers),
           doubled=sum(v - 1 for v in callers.values() if v > 1))
    assert len(callers) == n and sum(callers.values()) == n
