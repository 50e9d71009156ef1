"""The delivery pipeline end to end: real Redis, real worker processes, simulator over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import redis

from dispatcher.call import Call
from dispatcher.producer import Producer
from dispatcher.records import Records
from dispatcher.settings import Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, COMMUNITY, Proc, base_env, free_port, run_cli, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request: pytest.FixtureRequest) -> int:
    """Every test here runs against both CAD API versions."""
    return int(request.param)


def venv(redis_url: str, sim: CadSimulator, version: int, **extra: object) -> dict[str, str]:
    return base_env(redis_url, sim, SONORAN_API_VERSION=version, **extra)


@pytest.fixture
def env(redis_url: str, sim: CadSimulator, version: int) -> dict[str, str]:
    return venv(redis_url, sim, version)


@pytest.fixture
def producer(env: dict[str, str]) -> Iterator[Producer]:
    p = Producer(Settings.from_env(env))
    yield p
    p.close()


def _stats(env: dict[str, str]) -> dict:
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        return Records(client).stats()
    finally:
        client.close()


def _start(procs: Callable[..., Proc], env: dict[str, str]) -> tuple[Proc, Proc]:
    return procs(["worker"], env), procs(["scheduler"], env)


def _call(i: int) -> Call:
    return Call.create(caller=f"Caller {i}", location=f"{i} Route 68", description=f"Crash {i}",
                       postal=str(300 + i), plate=f"PLT{i:04d}", metadata={"n": i})


def test_hundred_calls_delivered_exactly_once_with_the_seed_body(
    env: dict[str, str], sim: CadSimulator, producer: Producer, procs: Callable[..., Proc],
    version: int,
) -> None:
    _start(procs, env)
    ids = [producer.enqueue(_call(i)) for i in range(100)]
    assert len(set(ids)) == 100
    wait_for(lambda: _stats(env)["delivered"] == 100, 60, message="100 deliveries")
    calls = sim.calls()
    assert len(calls) == 100, "each call reaches the CAD exactly once"
    assert sim.stats()["duplicates"] == 0
    by_caller = {c["call"]["caller"]: c["call"] for c in calls}
    for i in range(100):
        # v1: the seed's call object; v2: the same fields, metaData values as strings;
        # both tagged with our id and the time the call was made.
        sent = by_caller[f"Caller {i}"]
        tagged = sent["metaData"].pop("dispatcherCallId"), sent["metaData"].pop(
            "dispatcherQueuedAt")
        assert all(isinstance(t, str) and t for t in tagged)
        assert sent == {
            "serverId": "1", "isEmergency": True, "caller": f"Caller {i}",
            "location": f"{i} Route 68", "description": f"Crash {i}",
            "metaData": {"postal": str(300 + i), "plate": f"PLT{i:04d}",
                         "n": i if version == 1 else str(i)},
        }
    for received in sim.received():
        body = received["body"]
        assert received["version"] == version
        if version == 1:
            assert set(body) == {"id", "key", "type", "data"}
            assert body["id"] == COMMUNITY and body["type"] == "CALL_911"
            assert len(body["data"]) == 1
        else:
            assert set(body) == {"isEmergency", "caller", "location", "description", "metaData"}
            assert received["path"] == "/v2/emergency/servers/1/calls/911"
    records = Records(redis.Redis.from_url(env["REDIS_URL"]))
    cad_ids = {records.get(i).cad_call_id for i in ids}  # type: ignore[union-attr]
    assert cad_ids == {str(c["cad_id"]) for c in calls}
    assert all(records.get(i).status == "delivered" for i in ids)  # type: ignore[union-attr]


def test_invalid_api_key_dead_letters_after_one_attempt_then_replay_delivers(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc], version: int
) -> None:
    wrong = venv(redis_url, sim, version, SONORAN_API_KEY="sk-wrong-key-XYZ")
    worker, scheduler = _start(procs, wrong)
    enq = run_cli(["enqueue", "--caller", "Jane Doe", "--location", "Route 68 / Joshua Rd",
                   "--description", "Two-car collision", "--postal", "350"], wrong)
    assert enq.returncode == 0, enq.stderr
    call_id = enq.stdout.strip()
    wait_for(lambda: _stats(wrong)["dead"] == 1, 30, message="a dead letter")
    listed = run_cli(["dlq", "list", "--json"], wrong)
    assert listed.returncode == 0, listed.stderr
    (letter,) = json.loads(listed.stdout)
    assert letter["id"] == call_id
    assert letter["reason"] == "rejected"
    if version == 1:
        assert letter["status_code"] == 400
        assert letter["response"] == "INVALID API KEY"
    else:  # v2: 401 with a problem+json body, kept in the dead letter
        assert letter["status_code"] == 401
        assert json.loads(letter["response"])["title"] == "Unauthorized"
        assert "Unauthorized" in letter["last_error"]
    assert letter["attempts"] == 1
    assert letter["call"]["caller"] == "Jane Doe"
    for field in ("enqueued_at", "dead_at"):
        assert letter[field]
    assert len(sim.received()) == 1, "a permanent error is not retried"
    assert sim.calls() == []

    # The operator fixes the key and restarts the worker; replay uses the key configured now.
    worker.stop()
    right = venv(redis_url, sim, version)
    procs(["worker"], right)
    replay = run_cli(["dlq", "replay", call_id], right)
    assert replay.returncode == 0, replay.stderr
    wait_for(lambda: len(sim.calls()) == 1, 30, message="the replayed call delivered")
    status = run_cli(["status", call_id, "--json"], right)
    data = json.loads(status.stdout)
    assert data["status"] == "delivered"
    assert data["cad_call_id"] == str(sim.calls()[0]["cad_id"])
    assert data["replays"] == 1
    assert _stats(right)["dead"] == 0


@pytest.mark.parametrize(
    "fault, params",
    [("refuse", {}), ("error", {"status": 503}), ("hang", {}), ("reset", {}),
     ("ratelimit", {"retry_after": 1}), ("html200", {}), ("empty", {"status": 502})],
)
def test_transient_faults_are_retried_until_delivered_once(
    env: dict[str, str], sim: CadSimulator, procs: Callable[..., Proc], producer: Producer,
    fault: str, params: dict
) -> None:
    # A short read timeout keeps the hang case fast; the deadline logic is the same.
    sim.set_fault(fault, count=None if fault == "refuse" else 3, **params)
    _start(procs, env)
    ids = [producer.enqueue(_call(i)) for i in range(3)]
    if fault == "refuse":
        wait_for(lambda: _stats(env)["retried"] >= 3, 30, message="failed attempts")
        sim.clear_faults()
    wait_for(lambda: _stats(env)["delivered"] == 3, 90, message="deliveries after the fault")
    assert len(sim.calls()) == 3
    assert sim.stats()["duplicates"] == 0
    records = Records(redis.Redis.from_url(env["REDIS_URL"]))
    assert sum(records.get(i).attempts for i in ids) >= 4  # type: ignore[union-attr]


def test_api_key_never_reaches_logs_redis_or_cli_output(
    env: dict[str, str], sim: CadSimulator, procs: Callable[..., Proc], producer: Producer
) -> None:
    worker, scheduler = _start(procs, env)
    web = procs(["web"], {**env, "PORT": str(free_port())})
    producer.enqueue(_call(1))
    sim.set_fault("reject", count=1, text="INVALID API KEY")
    producer.enqueue(_call(2))
    sim.set_fault("error", count=2, status=500, body=f"<html>echo {API_KEY}</html>")
    producer.enqueue(_call(3))
    wait_for(lambda: _stats(env)["delivered"] + _stats(env)["dead"] == 3, 60,
             message="three outcomes")
    outputs = []
    for args in (["stats"], ["stats", "--json"], ["dlq", "list"], ["dlq", "list", "--json"],
                 ["dlq", "export"], ["status", producer.enqueue(_call(4))],
                 ["enqueue", "--caller", "x", "--location", "y", "--description", "z"],
                 ["worker", "--concurrency", "0"], ["dlq", "replay", "--all", "--json"]):
        done = run_cli(args, env)
        outputs.append(done.stdout + done.stderr)
    client = redis.Redis.from_url(env["REDIS_URL"])
    blob = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            blob.append(client.get(key))
        elif kind == b"hash":
            blob.extend(client.hvals(key))
        elif kind == b"list":
            blob.extend(client.lrange(key, 0, -1))
        elif kind == b"zset":
            blob.extend(client.zrange(key, 0, -1))
        elif kind == b"set":
            blob.extend(client.smembers(key))
        blob.append(key)
    worker.stop()
    scheduler.stop()
    web.stop()
    logs = worker.output() + scheduler.output() + web.output()
    assert "delivered" in logs  # the logs are real, and say what happened
    secret = API_KEY.encode()
    assert not any(secret in b for b in blob), "the API key is stored in Redis"
    assert API_KEY not in logs, "the API key reached a log"
    assert not any(API_KEY in o for o in outputs), "the API key reached CLI output"


def test_a_call_older_than_max_age_becomes_an_expired_dead_letter(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc], version: int
) -> None:
    env = venv(redis_url, sim, version, DISPATCHER_MAX_AGE_S=3,
               DISPATCHER_CIRCUIT_COOLDOWN_S=30, DISPATCHER_CIRCUIT_MAX_COOLDOWN_S=30)
    sim.set_fault("refuse")
    _start(procs, env)
    producer = Producer(Settings.from_env(env))
    try:
        ids = [producer.enqueue(_call(i)) for i in range(8)]
        wait_for(lambda: _stats(env)["dead"] == 8, 60, message="eight expired calls")
    finally:
        producer.close()
    sim.clear_faults()
    listed = json.loads(run_cli(["dlq", "list", "--json", "--reason", "expired"], env).stdout)
    assert sorted(r["id"] for r in listed) == sorted(ids)
    assert sim.calls() == [], "a stale call is never sent"
