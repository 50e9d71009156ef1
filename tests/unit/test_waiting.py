"""dispatcher.http.waiting: the outcomes listener against a real Redis pub/sub, and the
answers built from the outcomes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from dispatcher.http.waiting import Answer, Outcome, Outcomes, v1_answer, v2_answer
from tests.conftest import wait_for

P = "t"


@pytest.fixture
def outcomes(rclient: redis.Redis) -> Iterator[Outcomes]:
    listener = Outcomes(rclient, P, capacity=3, resubscribe_s=0.1).start()
    wait_for(listener.room, 5, message="the listener to subscribe")
    yield listener
    listener.stop()


def record(client: redis.Redis, call_id: str, state: str, **fields: object) -> None:
    client.hset(f"{P}:call:{call_id}", mapping={"state": state, **fields})


def deliver_later(client: redis.Redis, call_id: str, after_s: float, cad_id: str = "10001",
                  publish: bool = True) -> threading.Thread:
    """What delivered.lua does for a call a door waits on: the record, then the id out."""
    def run() -> None:
        time.sleep(after_s)
        record(client, call_id, "delivered", cad_call_id=cad_id, status_code=200,
               response=f"EMERGENCY CALL ADDED ID: {cad_id}")
        if publish:
            client.publish(f"{P}:outcomes", call_id)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def timed(fn: object, *args: object) -> tuple[object, float]:
    started = time.monotonic()
    result = fn(*args)  # type: ignore[operator]
    return result, time.monotonic() - started


def test_a_published_outcome_wakes_the_request_at_once(rclient: redis.Redis,
                                                       outcomes: Outcomes) -> None:
    record(rclient, "a", "sending")
    deliver_later(rclient, "a", 0.3)
    found, took = timed(outcomes.wait, ["a"], 10)
    assert found == [Outcome("delivered", "10001", 200, "EMERGENCY CALL ADDED ID: 10001")]
    assert 0.25 < took < 2


def test_an_outcome_recorded_before_the_request_registered_is_read_not_awaited(
        rclient: redis.Redis, outcomes: Outcomes) -> None:
    record(rclient, "a", "dead", reason="rejected", status_code=400, response="INVALID API KEY")
    found, took = timed(outcomes.wait, ["a"], 10)
    assert found == [Outcome("dead", "", 400, "INVALID API KEY", "rejected")]
    assert found is not None and found[0].rejected
    assert took < 0.5


def test_no_outcome_in_time_gives_the_states_after_the_wait(rclient: redis.Redis,
                                                            outcomes: Outcomes) -> None:
    record(rclient, "a", "scheduled")
    found, took = timed(outcomes.wait, ["a"], 1)
    assert found == [Outcome("scheduled")]
    assert 0.9 < took < 1.5
    assert outcomes.room() and outcomes._waiting == 0 and outcomes._by_id == {}


def test_several_calls_are_awaited_until_every_one_has_an_outcome(
        rclient: redis.Redis, outcomes: Outcomes) -> None:
    for call_id in "abc":
        record(rclient, call_id, "queued")
    deliver_later(rclient, "a", 0.1, "1")
    deliver_later(rclient, "b", 0.2, "2")
    deliver_later(rclient, "c", 0.8, "3")
    found, took = timed(outcomes.wait, ["a", "b", "c"], 10)
    assert [o.cad_call_id for o in found] == ["1", "2", "3"]  # type: ignore[union-attr]
    assert 0.75 < took < 2


def test_beyond_the_capacity_a_request_does_not_wait(rclient: redis.Redis,
                                                     outcomes: Outcomes) -> None:
    record(rclient, "a", "queued")
    waiting = [threading.Thread(target=outcomes.wait, args=(["a"], 2), daemon=True)
               for _ in range(3)]
    for thread in waiting:
        thread.start()
    wait_for(lambda: outcomes._waiting == 3, 5, message="three waiting requests")
    assert not outcomes.room()
    found, took = timed(outcomes.wait, ["a"], 2)
    assert found is None and took < 0.1
    deliver_later(rclient, "a", 0)
    for thread in waiting:
        thread.join(1)
        assert not thread.is_alive(), "one outcome wakes every request waiting on it"
    assert outcomes.room()


def test_a_stopped_listener_releases_the_waiting_and_lets_nobody_wait(
        rclient: redis.Redis, outcomes: Outcomes) -> None:
    record(rclient, "a", "queued")
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(timed(outcomes.wait, ["a"], 20)))
    thread.start()
    wait_for(lambda: outcomes._waiting == 1, 5, message="a waiting request")
    outcomes.stop()
    thread.join(5)
    assert result and result[0][1] < 4, "released, not held for its 20 s"  # type: ignore[index]
    assert not outcomes.room()
    assert outcomes.wait(["a"], 5) is None


def test_a_subscription_killed_by_redis_comes_back_and_wakes_again(
        rclient: redis.Redis) -> None:
    outcomes = Outcomes(rclient, P, resubscribe_s=1.0).start()
    wait_for(outcomes.room, 5, message="the listener to subscribe")
    db = str(rclient.connection_pool.connection_kwargs.get("db", 0))
    mine = [c["id"] for c in rclient.client_list(_type="pubsub") if c.get("db") == db]
    assert mine
    for client_id in mine:  # only this test's own subscription (its database)
        rclient.client_kill_filter(_id=client_id)
    wait_for(lambda: not outcomes.room(), 5, message="the listener to notice")
    assert outcomes.wait(["a"], 5) is None, "nobody waits while it is down"
    wait_for(outcomes.room, 5, message="the listener to subscribe again")
    record(rclient, "a", "sending")
    deliver_later(rclient, "a", 0.3)
    found, took = timed(outcomes.wait, ["a"], 10)
    outcomes.stop()
    assert found is not None and found[0].delivered and took < 2


# -- the answers -------------------------------------------------------------------------

OK = Outcome("delivered", "12345", 200, "EMERGENCY CALL ADDED ID: 12345")
V2_JSON = json.dumps({"callId": 77, "serverId": "1", "caller": "A"})
CALL = {"serverId": "1", "isEmergency": True, "caller": "A", "location": "L",
        "description": "D", "metaData": {"postal": "350"}}


def test_v1_answer() -> None:
    assert v1_answer([OK], 1) == Answer(200, OK.response, "text/plain")
    second = Outcome("delivered", "12346", 200, "EMERGENCY CALL ADDED ID: 12346")
    assert v1_answer([OK, second], 1) == Answer(200, OK.response, "text/plain")
    assert v1_answer([OK, Outcome("scheduled")], 1) is None
    v2 = Outcome("delivered", "77", 200, V2_JSON)
    assert v1_answer([v2], 2) == Answer(200, "EMERGENCY CALL ADDED ID: 77", "text/plain")
    assert v1_answer([Outcome("delivered", "", 200, "{}")], 2) is None
    refused = Outcome("dead", "", 400, "INVALID API KEY", "rejected")
    assert v1_answer([refused], 1) == Answer(400, "INVALID API KEY", "text/plain")
    assert v1_answer([refused, OK], 1) is None, "several calls: only all delivered"
    problem = json.dumps({"type": "about:blank", "title": "Unauthorized", "status": 401})
    assert v1_answer([Outcome("dead", "", 401, problem, "rejected")], 2) == Answer(
        401, problem, "application/problem+json")
    assert v1_answer([Outcome("dead", "", None, "", "expired")], 1) is None
    assert v1_answer([Outcome("")], 1) is None, "a record gone is no answer"


def test_v2_answer() -> None:
    v2 = Outcome("delivered", "77", 200, V2_JSON)
    assert v2_answer(v2, CALL, "1") == Answer(200, V2_JSON, "application/json")
    built = v2_answer(OK, CALL, "4")  # a v1 CAD's text: built from its id
    assert built is not None and built.status == 200
    assert json.loads(built.body) == {"callId": 12345, "serverId": "4", "isEmergency": True,
                                      "caller": "A", "location": "L", "description": "D",
                                      "metaData": {"postal": "350"}}
    cut = Outcome("delivered", "78", 200, V2_JSON[:20])  # a long echo cut at 2000 chars
    assert json.loads(v2_answer(cut, CALL, "1").body)["callId"] == 78  # type: ignore[union-attr]
    assert v2_answer(Outcome("delivered", "", 200, "not json"), CALL, "1") is None
    assert v2_answer(Outcome("sending"), CALL, "1") is None
    problem = json.dumps({"title": "Unauthorized", "status": 401})
    assert v2_answer(Outcome("dead", "", 401, problem, "rejected"), CALL, "1") == Answer(
        401, problem, "application/problem+json")
