"""dispatcher.simulator.api: the v1 and v2 endpoints answer as the CAD does."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
import requests

from dispatcher.simulator import FIRST_CALL_ID, CadSimulator
from tests.simulator.simkit import (
    CALL,
    KEY,
    TIMEOUT,
    V2_CALL,
    WRONG_KEY,
    post_v1,
    post_v2,
    v1_body,
)

# -- v1 ----------------------------------------------------------------------------------


def test_v1_success_answers_exact_text_and_records_the_call(
    sim: CadSimulator, session: requests.Session
) -> None:
    response = post_v1(session, sim)

    assert response.status_code == 200
    assert response.text == f"EMERGENCY CALL ADDED ID: {FIRST_CALL_ID}"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert re.search(r"ID:? *(\d+)", response.text)
    [created] = sim.calls()
    assert created["cad_id"] == FIRST_CALL_ID
    assert created["call"] == CALL
    assert created["version"] == 1
    assert isinstance(created["at"], float)
    [entry] = sim.received()
    assert entry["method"] == "POST"
    assert entry["path"] == "/emergency/call_911"
    assert (entry["version"], entry["status"], entry["fault"]) == (1, 200, None)
    assert entry["body"]["data"] == [CALL]


def test_v1_several_calls_answer_comma_separated_ids(
    sim: CadSimulator, session: requests.Session
) -> None:
    second = {**CALL, "caller": "Second Caller"}

    response = post_v1(session, sim, v1_body(data=[CALL, second]))

    assert response.text == f"EMERGENCY CALL ADDED ID: {FIRST_CALL_ID},{FIRST_CALL_ID + 1}"
    assert [c["call"] for c in sim.calls()] == [CALL, second]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("this is not json", "INVALID REQUEST TYPE"),
        ("[1, 2]", "INVALID REQUEST TYPE"),
        (v1_body(type="CALL_311"), "INVALID REQUEST TYPE"),
        ({k: v for k, v in v1_body().items() if k != "type"}, "INVALID REQUEST TYPE"),
        (v1_body(type="NOPE", id="other", key="bad"), "INVALID REQUEST TYPE"),
        (v1_body(id="other-community"), "INVALID COMMUNITY ID"),
        (v1_body(id="other-community", key=WRONG_KEY), "INVALID COMMUNITY ID"),
        (v1_body(key=WRONG_KEY), "INVALID API KEY"),
        ({k: v for k, v in v1_body().items() if k != "key"}, "INVALID API KEY"),
        (v1_body(data=[]), "INVALID REQUEST TYPE"),
        (v1_body(data=CALL), "INVALID REQUEST TYPE"),
        (v1_body(data=[CALL, "not an object"]), "INVALID REQUEST TYPE"),
        ({k: v for k, v in v1_body().items() if k != "data"}, "INVALID REQUEST TYPE"),
    ],
)
def test_v1_rejections_answer_400_with_the_documented_text(
    sim: CadSimulator, session: requests.Session, body: Any, expected: str
) -> None:
    response = post_v1(session, sim, body)

    assert response.status_code == 400
    assert response.text == expected
    assert response.headers["Content-Type"].startswith("text/plain")
    assert sim.calls() == []
    assert sim.received()[0]["status"] == 400


def test_other_paths_and_methods_answer_404(sim: CadSimulator, session: requests.Session) -> None:
    get = session.get(f"{sim.url}/emergency/call_911", timeout=TIMEOUT)
    other = session.post(f"{sim.url}/emergency/call_912", json=v1_body(), timeout=TIMEOUT)

    assert (get.status_code, get.text) == (404, "NOT FOUND")
    assert (other.status_code, other.text) == (404, "NOT FOUND")
    assert [e["version"] for e in sim.received()] == [None, None]
    assert sim.calls() == []


# -- v2 ----------------------------------------------------------------------------------


def test_v2_success_answers_json_and_records_the_call(
    sim: CadSimulator, session: requests.Session
) -> None:
    response = post_v2(session, sim, server="7")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    payload = response.json()
    assert payload["callId"] == FIRST_CALL_ID
    assert payload["serverId"] == "7"
    for name in ("isEmergency", "caller", "location", "description", "metaData"):
        assert payload[name] == V2_CALL[name]
    assert datetime.fromisoformat(payload["createdAt"].replace("Z", "+00:00")).tzinfo
    [created] = sim.calls()
    assert created["call"] == {**V2_CALL, "serverId": "7"}
    assert (created["cad_id"], created["version"]) == (FIRST_CALL_ID, 2)
    assert sim.received()[0]["version"] == 2


def test_v2_without_metadata_answers_empty_metadata(
    sim: CadSimulator, session: requests.Session
) -> None:
    body = {k: v for k, v in V2_CALL.items() if k != "metaData"}

    response = post_v2(session, sim, body)

    assert response.status_code == 200
    assert response.json()["metaData"] == {}


@pytest.mark.parametrize("key", [None, WRONG_KEY, ""])
def test_v2_bad_or_missing_key_answers_401_problem(
    sim: CadSimulator, session: requests.Session, key: str | None
) -> None:
    response = post_v2(session, sim, key=key, server="99")

    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "about:blank"
    assert problem["title"] == "Unauthorized"
    assert problem["status"] == 401
    assert problem["detail"] == "Invalid or missing API key"
    assert problem["instance"] == "/v2/emergency/servers/99/calls/911"
    assert re.fullmatch(r"[0-9a-f]+", problem["traceId"])
    assert sim.calls() == []


def test_v2_basic_auth_is_not_accepted(sim: CadSimulator, session: requests.Session) -> None:
    response = session.post(
        f"{sim.url}/v2/emergency/servers/1/calls/911",
        json=V2_CALL,
        headers={"Authorization": f"Basic {KEY}"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 401


def test_v2_unknown_server_answers_404_problem(
    sim: CadSimulator, session: requests.Session
) -> None:
    response = post_v2(session, sim, server="9")

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert (problem["title"], problem["status"]) == ("Not Found", 404)
    assert problem["detail"] == "Server 9 is not configured"
    assert sim.calls() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in V2_CALL.items() if k != "caller"}, "caller"),
        ({**V2_CALL, "location": ""}, "location"),
        ({**V2_CALL, "description": 42}, "description"),
        ({**V2_CALL, "isEmergency": "true"}, "isEmergency"),
        ({k: v for k, v in V2_CALL.items() if k != "isEmergency"}, "isEmergency"),
        ({**V2_CALL, "metaData": {"postal": 350}}, "metaData"),
        ({**V2_CALL, "metaData": ["350"]}, "metaData"),
        ([V2_CALL], "body"),
        ("not json", "body"),
    ],
)
def test_v2_invalid_body_answers_400_naming_the_field(
    sim: CadSimulator, session: requests.Session, body: Any, field: str
) -> None:
    response = post_v2(session, sim, body)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert (problem["title"], problem["status"]) == ("Bad Request", 400)
    assert field in problem["detail"]
    assert sim.calls() == []
