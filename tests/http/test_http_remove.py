"""The removal doors of a real ``web`` process: the CAD's REMOVE_911 (v1) and DELETE (v2).

Credentials are checked like the create doors; every id is looked up first (our id or the
CAD's id of a call we delivered); what taking back did is in the answer. What happens in
the CAD afterwards is tests/chaos/test_exactly_once.py's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import requests

from dispatcher.takeback import TakeBacks
from tests.conftest import API_KEY, COMMUNITY
from tests.http.httpkit import Web, queued_ids, seed_body, seed_call

pytestmark = pytest.mark.integration

V1_REMOVE = "/emergency/remove_911"


def remove_body(ids: list[Any], *, community: str = COMMUNITY, key: str = API_KEY,
                type_: str = "REMOVE_911") -> bytes:
    data = [{"serverId": 1, "callId": i} for i in ids]
    return json.dumps({"id": community, "key": key, "type": type_, "data": data}).encode()


def delete(web: Web, call_id: str, key: str | None = API_KEY) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.delete(f"{web.url}/v2/emergency/servers/1/calls/911/{call_id}",
                           headers=headers, timeout=10)


def queue(web: Web, n: int = 1) -> list[str]:
    answer = web.v1(seed_body([seed_call(i) for i in range(n)]))
    assert answer.status_code == 200, answer.text
    return queued_ids(answer)


def test_v1_remove_911_cancels_queued_calls(shared_web: Web, rclient: redis.Redis) -> None:
    ids = queue(shared_web, 2)

    answer = shared_web.post(V1_REMOVE, remove_body(ids))

    assert answer.status_code == 200, answer.text
    assert answer.text == "EMERGENCY CALL REMOVAL QUEUED ID: " + ",".join(ids)
    assert answer.headers["X-Dispatcher-Status"] == "cancelled,cancelled"
    assert {rclient.hget(f"dispatcher:call:{i}", "state") for i in ids} == {b"cancelled"}


@pytest.mark.parametrize(("body", "text"), [
    (remove_body(["x"], type_="CALL_911"), "INVALID REQUEST TYPE"),
    (remove_body(["x"], community="other"), "INVALID COMMUNITY ID"),
    (remove_body(["x"], key="wrong-key"), "INVALID API KEY"),
])
def test_v1_remove_911_checks_credentials_like_the_create_door(
        shared_web: Web, rclient: redis.Redis, body: bytes, text: str) -> None:
    answer = shared_web.post(V1_REMOVE, body)
    assert (answer.status_code, answer.text) == (400, text)


def test_an_unknown_id_takes_nothing_back(shared_web: Web, rclient: redis.Redis) -> None:
    [known] = queue(shared_web)
    answer = shared_web.post(V1_REMOVE, remove_body([known, 987654321]))
    assert answer.status_code == 404 and "987654321" in answer.text
    assert rclient.hget(f"dispatcher:call:{known}", "state") != b"cancelled", \
        "all or nothing: the known one was not taken back either"
    bad = shared_web.post(V1_REMOVE, remove_body([{"nested": 1}]))
    assert bad.status_code == 400 and "callId" in bad.text


def test_the_cad_id_of_a_delivered_call_names_it(shared_web: Web, rclient: redis.Redis) -> None:
    [call_id] = queue(shared_web)
    # As a worker records a delivery (the scripts are the worker's own).
    from dispatcher.lifecycle import Lifecycle
    from dispatcher.settings import Secret, Settings
    lc = Lifecycle(rclient, Settings(community_id=COMMUNITY, api_key=Secret(API_KEY)))
    assert lc.delivered(call_id, "31337", 200, "EMERGENCY CALL ADDED ID: 31337") == "delivered"

    answer = shared_web.post(V1_REMOVE, remove_body([31337]))

    assert answer.status_code == 200 and answer.headers["X-Dispatcher-Status"] == "removing"
    assert rclient.hget(f"dispatcher:call:{call_id}", "op") == b"remove"


def test_v2_delete_takes_a_call_back_with_the_bearer_key(
        shared_web: Web, rclient: redis.Redis) -> None:
    [call_id] = queue(shared_web)
    assert delete(shared_web, call_id, key="wrong").status_code == 401
    assert delete(shared_web, call_id, key=None).status_code == 401

    answer = delete(shared_web, call_id)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"callId": call_id, "serverId": 1, "id": call_id,
                             "status": "cancelled"}
    missing = delete(shared_web, "424242")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    assert TakeBacks(rclient, "dispatcher").remove(call_id)[1] == "cancelled", "idempotent"


def test_the_ticket_of_the_create_answer_names_the_call(
        shared_web: Web, rclient: redis.Redis) -> None:
    """A v1 script reads `ID: (%d+)` and removes by that number; the SDK's
    deleteEmergencyCallV2 sends the v2 answer's callId (an integer) in the path."""
    v1 = shared_web.v1(seed_body([seed_call(0)]))
    (first,) = queued_ids(v1)
    ticket = int(v1.text.rsplit(" ", 1)[1])
    answer = shared_web.post(V1_REMOVE, remove_body([ticket]))
    assert answer.status_code == 200, answer.text
    assert answer.text == f"EMERGENCY CALL REMOVAL QUEUED ID: {ticket}"
    assert rclient.hget(f"dispatcher:call:{first}", "state") == b"cancelled"

    v2 = shared_web.v2(json.dumps({"isEmergency": True, "caller": "A", "location": "B",
                                   "description": "C", "metaData": {}}), server_id="1")
    body = v2.json()
    deleted = delete(shared_web, str(body["callId"]))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["id"] == body["id"] and deleted.json()["status"] == "cancelled"
