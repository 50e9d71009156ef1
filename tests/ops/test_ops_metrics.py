"""/metrics and /healthz of a real web process, with real workers, scheduler and the CAD
simulator over HTTP. The exposition is read back with prometheus_client's own parser."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
import requests
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, Proc, RedisServer, base_env, free_port, wait_for
from tests.ops.conftest import OPS_TOKEN, dead_letters, enqueue, start_web, stats

pytestmark = pytest.mark.integration


def parse(text: str) -> dict[str, Metric]:
    """Families by name, as Prometheus would read them (each exposed once)."""
    families: dict[str, Metric] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"family {family.name} exposed twice"
        families[family.name] = family
    return families


def value(family: Metric, name: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return float(found[0])


def test_metrics_add_up_across_workers_and_survive_a_web_restart(
    ops_env: dict[str, str], sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    procs(["worker"], ops_env)
    procs(["worker"], ops_env)
    procs(["scheduler"], ops_env)
    web = start_web(procs, ops_env)
    wait_for(lambda: web.health()["workers"]["alive"] == 2, 60, message="two heartbeats")

    ids = [enqueue(ops_env, f"Caller {i}") for i in range(6)]
    wait_for(lambda: stats(ops_env)["delivered"] == 6, 60, message="6 deliveries")
    sim.set_fault("error", status=503, count=1)
    ids.append(enqueue(ops_env, "Retried caller"))
    wait_for(lambda: stats(ops_env)["delivered"] == 7, 60, message="the retried call")
    (dead_id,) = dead_letters(ops_env, sim, ["Rejected caller"])

    metrics = parse(web.metrics_text())
    delivered = metrics["dispatcher_calls_delivered"]
    assert delivered.type == "counter"
    assert value(delivered, "dispatcher_calls_delivered_total") == 7
    assert value(metrics["dispatcher_calls_enqueued"], "dispatcher_calls_enqueued_total") == 8
    assert value(metrics["dispatcher_calls_retried"], "dispatcher_calls_retried_total") == 1
    dead = metrics["dispatcher_calls_dead_lettered"]
    assert value(dead, "dispatcher_calls_dead_lettered_total", reason="rejected") == 1
    assert value(dead, "dispatcher_calls_dead_lettered_total", reason="expired") == 0
    assert value(metrics["dispatcher_dead_letters"], "dispatcher_dead_letters") == 1
    for gauge in ("queued_calls", "scheduled_calls", "in_flight_calls"):
        assert value(metrics[f"dispatcher_{gauge}"], f"dispatcher_{gauge}") == 0
    assert value(metrics["dispatcher_oldest_call_age_seconds"],
                 "dispatcher_oldest_call_age_seconds") == 0
    assert value(metrics["dispatcher_workers_alive"], "dispatcher_workers_alive") == 2
    assert value(metrics["dispatcher_redis_memory_used_bytes"],
                 "dispatcher_redis_memory_used_bytes") > 0

    circuit = metrics["dispatcher_circuit_state"]
    assert circuit.type == "gauge"
    assert {s.labels["state"]: s.value for s in circuit.samples} == {
        "closed": 1, "half_open": 0, "open": 0}

    # The CAD latency histogram: cumulative buckets per outcome, +Inf equal to the count,
    # one observation per CAD request (7 delivered, 1 retryable 503, 1 permanent 400).
    hist = metrics["dispatcher_cad_request_duration_seconds"]
    assert hist.type == "histogram"
    expected = {"delivered": 7, "retryable": 1, "permanent": 1}
    for outcome, count in expected.items():
        buckets = [(float(s.labels["le"]), s.value) for s in hist.samples
                   if s.name.endswith("_bucket") and s.labels["outcome"] == outcome]
        assert [le for le, _ in buckets] == sorted(le for le, _ in buckets)
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{outcome} buckets are not cumulative: {counts}"
        assert buckets[-1] == (float("inf"), count)
        assert value(hist, "dispatcher_cad_request_duration_seconds_count",
                     outcome=outcome) == count
        assert value(hist, "dispatcher_cad_request_duration_seconds_sum", outcome=outcome) > 0
    assert len(sim.received()) == sum(expected.values())

    text = web.metrics_text()
    assert API_KEY not in text and OPS_TOKEN not in text
    assert dead_id not in text, "no per-call labels (unbounded cardinality)"

    # The figures live in Redis: a new web process reports the same.
    web.proc.stop()
    again = start_web(procs, {**ops_env, "PORT": str(free_port())})
    after = parse(again.metrics_text())
    assert value(after["dispatcher_calls_delivered"], "dispatcher_calls_delivered_total") == 7
    assert value(after["dispatcher_calls_dead_lettered"], "dispatcher_calls_dead_lettered_total",
                 reason="rejected") == 1


def test_healthz_lists_live_workers_and_drops_a_stopped_one(
    ops_env: dict[str, str], sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    web = start_web(procs, ops_env)
    health = web.health()
    assert health["status"] == "ok" and health["redis"] is True
    assert health["workers"] == {"alive": 0, "list": []}
    assert any("no worker" in p for p in health["problems"])
    assert health["circuit"] == "closed"

    worker = procs(["worker"], ops_env)
    wait_for(lambda: web.health()["workers"]["alive"] == 1, 60, message="a heartbeat")
    health = web.health()
    (entry,) = health["workers"]["list"]
    assert entry["alive"] is True
    assert entry["name"].endswith(f"/{worker.pid}"), entry
    assert 0 <= entry["last_beat_age_s"] < 3 * entry["interval_s"]
    assert health["problems"] == []
    for key in ("queued", "scheduled", "in_flight", "dead", "oldest_age_s"):
        assert key in health
    assert health["redis_memory"]["used_bytes"] > 0

    worker.signal(signal.SIGTERM)  # a clean stop says goodbye at once
    wait_for(lambda: not worker.alive(), 30, message="the worker to stop")
    assert web.health()["workers"]["alive"] == 0
    assert API_KEY not in web.get("/healthz").text


def test_healthz_and_metrics_answer_503_while_redis_is_down(
    sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    server = RedisServer().start()
    try:
        env = base_env(server.url, sim, PORT=str(free_port()), DISPATCHER_OPS_TOKEN=OPS_TOKEN)
        web = start_web(procs, env)
        http = requests.Session()  # logged in while Redis answers (sessions live there)
        http.post(web.url + "/login", data={"token": OPS_TOKEN}, headers={"Origin": web.url},
                  allow_redirects=False, timeout=10)
        server.kill()
        health = web.get("/healthz")
        assert health.status_code == 503
        assert health.json()["redis"] is False and health.json()["status"] == "down"
        assert web.get("/metrics").status_code == 503
        page = http.get(web.url + "/", timeout=10)
        assert page.status_code == 503 and "Redis does not answer" in page.text
        login = requests.post(web.url + "/login", data={"token": OPS_TOKEN},
                              headers={"Origin": web.url}, allow_redirects=False, timeout=10)
        assert login.status_code == 503 and "Redis does not answer" in login.text
    finally:
        server.stop()


def test_unknown_fields_are_counted_not_refused(
    ops_env: dict[str, str], procs: Callable[..., Proc]
) -> None:
    web = start_web(procs, ops_env)
    call = {"serverId": "1", "isEmergency": True, "caller": "A", "location": "B",
            "description": "C", "coords": {"x": 1.5}, "nextYearsField": [1, 2]}
    body = {"id": ops_env["SONORAN_COMMUNITY_ID"], "key": API_KEY, "type": "CALL_911",
            "data": [call, {**call, "nextYearsField": None}]}
    answer = requests.post(web.url + "/emergency/call_911", json=body, timeout=10)
    assert answer.status_code == 200, answer.text

    counted = parse(web.metrics_text())["dispatcher_calls_unknown_fields"]
    assert counted.type == "counter"
    assert value(counted, "dispatcher_calls_unknown_fields_total") == 4
