"""``Prefer: wait=N`` on both create routes: a real web process, a real worker process and
the CAD simulator over HTTP, once with the CAD speaking v1 and once v2.

The processes live for the module (a worker takes seconds to start); each test uses calls
of its own and puts the simulator back as it found it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from jsonschema import Draft202012Validator

from dispatcher.http.app import create_app
from dispatcher.producer import Producer
from dispatcher.settings import Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, COMMUNITY, Proc, base_env, wait_for
from tests.http.httpkit import Web, queued_ids, seed_body, seed_call, start_web

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The pattern the official resource's scripts read the CAD's id with.
SCRIPT_ID = re.compile(r"ID: (\d+)")
ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


@dataclass
class Stack:
    web: Web
    sim: CadSimulator
    client: redis.Redis
    version: int
    env: dict[str, str]

    def record(self, call_id: str) -> dict[str, str]:
        raw = self.client.hgetall(f"dispatcher:call:{call_id}")
        return {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]

    def v1(self, calls: list[dict[str, object]], wait: str | None) -> tuple[
            requests.Response, float]:
        headers = {"Prefer": wait} if wait is not None else {}
        started = time.monotonic()
        answer = self.web.v1(seed_body(calls), **headers)
        return answer, time.monotonic() - started

    def v2(self, call: dict[str, object], wait: str | None) -> tuple[requests.Response, float]:
        headers = {"Prefer": wait} if wait is not None else {}
        started = time.monotonic()
        answer = self.web.v2(json.dumps(call), **headers)
        return answer, time.monotonic() - started


@pytest.fixture(scope="module", params=[1, 2], ids=["cad-v1", "cad-v2"])
def stack(request: pytest.FixtureRequest, redis_base_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    version = int(request.param)
    logs: Path = tmp_path_factory.mktemp(f"wait-v{version}")
    client = redis.Redis.from_url(redis_base_url)
    client.flushdb()
    sim = CadSimulator(community_id=COMMUNITY, api_key=API_KEY).start()
    env = base_env(redis_base_url, sim, SONORAN_API_VERSION=version)
    started: list[Proc] = []

    def start(args: list[str], env: dict[str, str], name: str | None = None) -> Proc:
        proc = Proc(args, env, logs / f"{name or args[0]}.log")
        started.append(proc)
        return proc

    try:
        start(["worker"], env)
        web = start_web(start, env)
        stack = Stack(web, sim, client, version, env)
        # The worker is up once it delivered a first call.
        (first,) = queued_ids(stack.v1([seed_call(999)], None)[0])
        wait_for(lambda: stack.record(first).get("state") == "delivered", 60,
                 message="the worker to deliver a first call")
        yield stack
    finally:
        for proc in started:
            proc.stop(timeout=10)
        sim.stop()
        client.flushdb()
        client.close()


@pytest.fixture(autouse=True)
def _sim_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        stack.sim.set_credentials(api_key=API_KEY)
        stack.sim.reset()


def v2_call(i: int) -> dict[str, object]:
    call = seed_call(i)
    call.pop("serverId")
    return call


def test_delivered_in_time_the_v1_route_answers_the_cads_text_with_its_id(
        stack: Stack) -> None:
    answer, took = stack.v1([seed_call(1)], "wait=10")
    (our_id,) = answer.headers["X-Dispatcher-Call-Id"].split(",")
    record = stack.record(our_id)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["Preference-Applied"] == "wait=10"
    assert ULID.match(our_id) and record["state"] == "delivered"
    assert record["notify"] == "1", "marked for publishing: a door waits on it"
    # The CAD's numeric id, where the official resource's scripts look for it; a v2 CAD's
    # JSON is turned into the v1 text.
    assert answer.text == f"EMERGENCY CALL ADDED ID: {record['cad_call_id']}"
    match = SCRIPT_ID.search(answer.text)
    assert match and int(match.group(1)) >= 10001
    assert took < 5


def test_delivered_in_time_the_v2_route_answers_the_cads_json(stack: Stack) -> None:
    answer, _ = stack.v2(v2_call(2), "respond-async, wait=10")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Preference-Applied"] == "wait=10"
    our_id = answer.headers["X-Dispatcher-Call-Id"]
    body = answer.json()
    record = stack.record(our_id)
    assert body["callId"] == int(record["cad_call_id"]) and body["serverId"] == "1"
    assert (body["caller"], body["metaData"]["postal"]) == ("Jane Doe 2", "352")
    if stack.version == 2:
        assert body == json.loads(record["response"]), "the CAD's own JSON"
        assert "createdAt" in body
    else:
        assert "status" not in body, "built from the CAD's id, not our queued answer"


def test_refused_for_good_in_time_answers_the_cads_refusal(stack: Stack) -> None:
    stack.sim.set_credentials(api_key="rotated-" + API_KEY)  # our key no longer works
    answer, took = stack.v1([seed_call(3)], "wait=10")
    our_id = answer.headers["X-Dispatcher-Call-Id"]
    record = stack.record(our_id)
    assert (record["state"], record["reason"]) == ("dead", "rejected")
    assert answer.headers["Preference-Applied"] == "wait=10"
    if stack.version == 1:
        assert (answer.status_code, answer.text) == (400, "INVALID API KEY")
        assert answer.headers["Content-Type"].startswith("text/plain")
    else:
        assert answer.status_code == 401
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.json()["status"] == 401
    assert took < 5
    answer, _ = stack.v2(v2_call(4), "wait=10")
    assert answer.status_code == (400 if stack.version == 1 else 401)
    assert answer.headers["Preference-Applied"] == "wait=10"


def test_no_outcome_in_time_gives_the_queued_answer_after_n_seconds(stack: Stack) -> None:
    stack.sim.set_latency(4000)
    answer, took = stack.v1([seed_call(5)], "wait=2")
    assert answer.status_code == 200
    (our_id,) = queued_ids(answer)
    assert answer.headers["X-Dispatcher-Call-Id"] == our_id
    assert "Preference-Applied" not in answer.headers
    assert 1.9 < took < 3.5
    answer, took = stack.v2(v2_call(6), "wait=1")
    assert answer.json()["status"] == "queued" and "Preference-Applied" not in answer.headers
    assert 0.9 < took < 2.5
    # It is delivered all the same, later.
    wait_for(lambda: stack.record(our_id).get("state") == "delivered", 30,
             message="the slow delivery")


def test_a_wait_above_30_is_taken_as_30(stack: Stack) -> None:
    answer, took = stack.v1([seed_call(7)], "wait=3600")
    assert answer.headers["Preference-Applied"] == "wait=30"
    assert answer.text.startswith("EMERGENCY CALL ADDED ID: ") and took < 5


def test_several_calls_answer_the_first_ones_text_only_when_all_were_delivered(
        stack: Stack) -> None:
    answer, _ = stack.v1([seed_call(10), seed_call(11), seed_call(12)], "wait=10")
    ids = answer.headers["X-Dispatcher-Call-Id"].split(",")
    assert len(ids) == 3 and answer.headers["Preference-Applied"] == "wait=10"
    cad_ids = [stack.record(i)["cad_call_id"] for i in ids]
    assert answer.text == f"EMERGENCY CALL ADDED ID: {cad_ids[0]}", cad_ids

    # One of two refused: the queued answer for both, as soon as both have an outcome.
    stack.sim.set_fault("reject", count=1)
    answer, took = stack.v1([seed_call(13), seed_call(14)], "wait=10")
    ids = queued_ids(answer)
    assert "Preference-Applied" not in answer.headers and took < 5
    assert sorted(stack.record(i)["state"] for i in ids) == ["dead", "delivered"]


def test_without_prefer_the_answer_is_unchanged(stack: Stack) -> None:
    answer, took = stack.v1([seed_call(20)], None)
    (our_id,) = queued_ids(answer)
    assert "Preference-Applied" not in answer.headers and took < 1
    assert answer.headers["X-Dispatcher-Call-Id"] == our_id
    answer, _ = stack.v1([seed_call(21)], "wait=0")
    (zero,) = queued_ids(answer)
    assert "Preference-Applied" not in answer.headers
    answer, _ = stack.v1([seed_call(22)], "wait=soon")  # a bad value is ignored
    assert queued_ids(answer) and "Preference-Applied" not in answer.headers
    for call_id in (our_id, zero):
        assert "notify" not in stack.record(call_id), "nobody waits: nothing is published"


def test_every_process_of_a_prefork_door_hears_its_own_outcomes(
        stack: Stack, procs: Callable[..., Proc]) -> None:
    web = start_web(procs, {**stack.env, "WEB_CONCURRENCY": "2"})
    answers = [web.v1(seed_body([seed_call(50 + i)]), Prefer="wait=10") for i in range(8)]
    assert all(a.headers.get("Preference-Applied") == "wait=10" for a in answers)
    assert all(SCRIPT_ID.search(a.text) for a in answers)


def test_while_the_listener_is_down_nobody_waits(redis_base_url: str) -> None:
    """The app with a real Redis: its listener stopped, a waiting request is answered at
    once (queued), and its call is not marked for publishing."""
    prefix = "wait-listener-down"
    settings = Settings.from_env(base_env(redis_base_url)).with_(prefix=prefix)
    producer = Producer(settings)
    app = create_app(settings, producer)
    door = app.extensions["dispatcher.door"]
    try:
        wait_for(door.outcomes.room, 10, message="the listener to subscribe")
        door.outcomes.stop()
        started = time.monotonic()
        answer = app.test_client().post("/emergency/call_911",
                                        data=seed_body([seed_call(30)]),
                                        headers={"Prefer": "wait=5"})
        took = time.monotonic() - started
        (our_id,) = queued_ids(answer)
        assert took < 1 and "Preference-Applied" not in answer.headers
        assert producer.client.hget(f"{prefix}:call:{our_id}", "notify") is None
    finally:
        for key in producer.client.scan_iter(f"{prefix}:*"):
            producer.client.delete(key)
        producer.close()


def test_the_openapi_document_describes_the_waited_answers(stack: Stack) -> None:
    spec = requests.get(stack.web.url + "/openapi.json", timeout=10).json()
    v1 = spec["paths"]["/emergency/call_911"]["post"]
    v2 = spec["paths"]["/v2/emergency/servers/{serverId}/calls/911"]["post"]
    for route in (v1, v2):
        assert "Prefer" in [p["name"] for p in route["parameters"]]
        assert {"X-Dispatcher-Call-Id", "Preference-Applied"} <= set(
            route["responses"]["200"]["headers"])
    answer, _ = stack.v1([seed_call(40)], "wait=10")
    assert answer.headers["Preference-Applied"]
    text_schema = v1["responses"]["200"]["content"]["text/plain"]["schema"]
    assert re.match(text_schema["pattern"], answer.text)
    for name, header in v1["responses"]["200"]["headers"].items():
        assert re.match(header["schema"]["pattern"], answer.headers[name])
    answer, _ = stack.v2(v2_call(41), "wait=10")
    assert answer.headers["Preference-Applied"]
    schema = v2["responses"]["200"]["content"]["application/json"]["schema"]
    Draft202012Validator({**schema, "components": spec["components"]}).validate(answer.json())
    assert not Draft202012Validator({"$ref": "#/components/schemas/QueuedV2",
                                     "components": spec["components"]}).is_valid(answer.json())
