"""dispatcher.simulator.readback: reading calls back and removing them, as v1 and v2 do."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
import requests

from dispatcher.simulator import CadSimulator
from tests.simulator.simkit import (
    CALL,
    V2_CALL,
    WRONG_KEY,
    created_id,
    delete_v2,
    post_v1,
    post_v2,
    read_v1,
    read_v2,
    remove_v1,
    remove_v1_body,
    v1_body,
    v1_read_body,
)


def create_v1(session: requests.Session, sim: CadSimulator, **fields: Any) -> int:
    return created_id(post_v1(session, sim, v1_body(data=[{**CALL, **fields}])))


def create_v2(
    session: requests.Session, sim: CadSimulator, server: str = "1", **fields: Any
) -> int:
    return created_id(post_v2(session, sim, {**V2_CALL, **fields}, server=server))


def listed_ids(response: requests.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return listed_ids_of(response.json()["emergencyCalls"])


def listed_ids_of(calls: list[dict[str, Any]]) -> list[int]:
    return [c["callId"] for c in calls]


# -- v1 get_calls ------------------------------------------------------------------------


def test_v1_get_calls_lists_the_servers_emergency_calls_with_metadata(
    sim: CadSimulator, session: requests.Session
) -> None:
    on_one = create_v1(session, sim)
    on_one_int = create_v1(session, sim, serverId=1)
    no_server = create_v1(session, sim, serverId=None)
    on_seven = create_v1(session, sim, serverId=7)
    v2_on_seven = create_v2(session, sim, server="7")

    server_one = read_v1(session, sim)
    server_seven = read_v1(session, sim, v1_read_body(7))

    assert server_one.headers["Content-Type"].startswith("application/json")
    assert server_one.json()["emergencyCalls"][0] == {
        "callId": on_one,
        "isEmergency": True,
        "caller": CALL["caller"],
        "location": CALL["location"],
        "description": CALL["description"],
        "metaData": CALL["metaData"],
    }
    assert listed_ids(server_one) == [on_one, on_one_int, no_server]
    assert listed_ids(server_seven) == [on_seven, v2_on_seven]
    assert server_one.json()["activeCalls"] == server_one.json()["closedCalls"] == []


def test_v1_get_calls_leaves_metadata_out_when_switched_off(
    sim: CadSimulator, session: requests.Session
) -> None:
    create_v1(session, sim)
    sim.set_readback(v1_metadata=False)

    [call] = read_v1(session, sim).json()["emergencyCalls"]

    assert "metaData" not in call
    assert call["caller"] == CALL["caller"]


@pytest.mark.parametrize(
    ("kind", "emergency", "dispatch"),
    [(1, True, False), ("1", True, False), (0, False, True), (100, True, True), (None, True, True)],
)
def test_v1_get_calls_type_picks_the_lists(
    sim: CadSimulator, session: requests.Session, kind: Any, emergency: bool, dispatch: bool
) -> None:
    listed = create_v1(session, sim)
    converted = create_v1(session, sim)
    dispatch_id = sim.convert(converted)
    query = {} if kind is None else {"type": kind}

    answer = read_v1(session, sim, v1_read_body("1", **query)).json()

    assert listed_ids_of(answer["emergencyCalls"]) == ([listed] if emergency else [])
    assert listed_ids_of(answer["activeCalls"]) == ([dispatch_id] if dispatch else [])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (v1_read_body() | {"type": "CALL_911"}, "INVALID REQUEST TYPE"),
        (v1_read_body() | {"id": "other-community"}, "INVALID COMMUNITY ID"),
        (v1_read_body() | {"key": WRONG_KEY}, "INVALID API KEY"),
        (v1_read_body() | {"data": []}, "INVALID REQUEST TYPE"),
        ({k: v for k, v in v1_read_body().items() if k != "data"}, "INVALID REQUEST TYPE"),
    ],
)
def test_v1_get_calls_checks_the_request_like_call_911(
    sim: CadSimulator, session: requests.Session, body: dict[str, Any], expected: str
) -> None:
    response = read_v1(session, sim, body)

    assert (response.status_code, response.text) == (400, expected)
    assert response.headers["Content-Type"].startswith("text/plain")


def test_v1_get_calls_without_the_plan_answers_the_permanent_400(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_readback(enabled=False)

    refused = read_v1(session, sim)
    bad_key = read_v1(session, sim, v1_read_body() | {"key": WRONG_KEY})
    sim.set_readback(enabled=True)

    assert (refused.status_code, refused.text) == (
        400,
        "API ENDPOINT IS NOT ENABLED FOR THIS COMMUNITY",
    )
    assert bad_key.text == "INVALID API KEY"  # the credentials are checked first
    assert read_v1(session, sim).status_code == 200


# -- v2 GET calls ------------------------------------------------------------------------


def test_v2_get_calls_answers_pascal_case_lists_with_string_metadata(
    sim: CadSimulator, session: requests.Session
) -> None:
    v2_id = create_v2(session, sim, server="7")
    v1_id = create_v1(session, sim, serverId="7", metaData={"postal": 2000, "silent": True})
    create_v1(session, sim)  # server 1: not listed for 7

    response = read_v2(session, sim, server="7")

    assert response.headers["Content-Type"].startswith("application/json")
    payload = response.json()
    assert set(payload) == {"ActiveCalls", "EmergencyCalls", "ClosedCalls", "ClosedCallCount"}
    assert (payload["ActiveCalls"], payload["ClosedCalls"], payload["ClosedCallCount"]) == (
        [],
        [],
        0,
    )
    first, second = payload["EmergencyCalls"]
    assert datetime.fromisoformat(first.pop("updated").replace("Z", "+00:00")).tzinfo
    assert first == {"callId": v2_id, **V2_CALL}
    assert second["callId"] == v1_id
    assert second["metaData"] == {"postal": "2000", "silent": "true"}


def test_v2_get_calls_casing_switches_to_camel_case(
    sim: CadSimulator, session: requests.Session
) -> None:
    call_id = create_v2(session, sim)
    sim.set_readback(v2_casing="camel")

    payload = read_v2(session, sim).json()

    assert set(payload) == {"activeCalls", "emergencyCalls", "closedCalls", "closedCallCount"}
    assert [c["callId"] for c in payload["emergencyCalls"]] == [call_id]


def test_v2_get_calls_type_zero_lists_dispatch_calls_only(
    sim: CadSimulator, session: requests.Session
) -> None:
    create_v2(session, sim)
    dispatch_id = sim.convert(create_v2(session, sim))

    payload = read_v2(session, sim, query="type=0").json()
    both = read_v2(session, sim, query="").json()

    assert payload["EmergencyCalls"] == []
    assert [c["callId"] for c in payload["ActiveCalls"]] == [dispatch_id]
    assert (len(both["EmergencyCalls"]), len(both["ActiveCalls"])) == (1, 1)


@pytest.mark.parametrize("server", ["1", "9"])
@pytest.mark.parametrize("key", [WRONG_KEY, None])
def test_v2_get_calls_bad_key_answers_401_problem(
    sim: CadSimulator, session: requests.Session, server: str, key: str | None
) -> None:
    response = read_v2(session, sim, server=server, key=key)

    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == "Invalid or missing API key"
    assert response.json()["instance"] == f"/v2/emergency/servers/{server}/calls"


def test_v2_get_calls_unknown_server_answers_404_and_bad_query_400(
    sim: CadSimulator, session: requests.Session
) -> None:
    unknown = read_v2(session, sim, server="9")
    bad_type = read_v2(session, sim, query="type=emergency")
    bad_limit = read_v2(session, sim, query="closedLimit=ten&type=1")

    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "Server 9 is not configured"
    assert bad_type.status_code == 400
    assert "'type'" in bad_type.json()["detail"]
    assert bad_limit.status_code == 400
    assert "'closedLimit'" in bad_limit.json()["detail"]


def test_v2_get_calls_without_the_plan_answers_403_problem(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_readback(enabled=False)

    refused = read_v2(session, sim)
    bad_key = read_v2(session, sim, key=WRONG_KEY)

    assert refused.status_code == 403
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["title"] == "Forbidden"
    assert refused.json()["detail"] == "API endpoint is not enabled for this community"
    assert bad_key.status_code == 401


# -- v1 remove_911 -----------------------------------------------------------------------


def test_v1_remove_takes_the_call_off_the_list_and_is_idempotent(
    sim: CadSimulator, session: requests.Session
) -> None:
    removed = create_v1(session, sim)
    kept = create_v1(session, sim)

    first = remove_v1(session, sim, remove_v1_body(removed))
    again = remove_v1(session, sim, remove_v1_body(str(removed)))
    unknown = remove_v1(session, sim, remove_v1_body(999999, "not-a-number"))

    for response in (first, again, unknown):
        assert (response.status_code, response.text) == (200, "API ID(s) set!")
        assert response.headers["Content-Type"].startswith("text/plain")
    assert listed_ids(read_v1(session, sim)) == [kept]
    record = next(c for c in sim.calls() if c["cad_id"] == removed)
    assert (record["active"], record["ended"]) == (False, "removed")
    assert isinstance(record["ended_at"], float)


def test_v1_remove_only_removes_from_the_named_server(
    sim: CadSimulator, session: requests.Session
) -> None:
    call_id = create_v1(session, sim, serverId=7)

    wrong_server = remove_v1(session, sim, remove_v1_body(call_id, server="1"))
    right_server = remove_v1(session, sim, remove_v1_body(call_id, server=7))

    assert wrong_server.status_code == 200
    assert right_server.status_code == 200
    assert [r["ended"] for r in sim.calls()] == ["removed"]
    assert sim.stats()["removed"] == 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"type": "REMOVE_912"}, "INVALID REQUEST TYPE"),
        ({"id": "other-community"}, "INVALID COMMUNITY ID"),
        ({"key": WRONG_KEY}, "INVALID API KEY"),
        ({"data": "10001"}, "INVALID REQUEST TYPE"),
    ],
)
def test_v1_remove_checks_the_request_like_call_911(
    sim: CadSimulator, session: requests.Session, overrides: dict[str, Any], expected: str
) -> None:
    call_id = create_v1(session, sim)

    response = remove_v1(session, sim, remove_v1_body(call_id) | overrides)

    assert (response.status_code, response.text) == (400, expected)
    assert sim.calls()[0]["active"] is True


# -- v2 DELETE ---------------------------------------------------------------------------


def test_v2_delete_answers_the_ids_then_404_once_gone(
    sim: CadSimulator, session: requests.Session
) -> None:
    call_id = create_v2(session, sim)

    deleted = delete_v2(session, sim, call_id)
    again = delete_v2(session, sim, call_id)

    assert deleted.status_code == 200
    assert deleted.json() == {"callId": call_id, "serverId": 1}
    assert again.status_code == 404
    assert again.headers["Content-Type"] == "application/problem+json"
    assert again.json()["instance"] == f"/v2/emergency/servers/1/calls/911/{call_id}"
    assert sim.calls()[0]["ended"] == "removed"
    assert read_v2(session, sim).json()["EmergencyCalls"] == []


@pytest.mark.parametrize(("call_id", "server"), [(999999, "1"), ("abc", "1"), (None, "7")])
def test_v2_delete_of_a_call_not_in_that_list_answers_404(
    sim: CadSimulator, session: requests.Session, call_id: Any, server: str
) -> None:
    on_one = create_v2(session, sim)

    response = delete_v2(session, sim, on_one if call_id is None else call_id, server=server)

    assert response.status_code == 404
    assert response.json()["status"] == 404
    assert sim.calls()[0]["active"] is True


def test_v2_delete_checks_key_and_server(sim: CadSimulator, session: requests.Session) -> None:
    call_id = create_v2(session, sim)

    bad_key = delete_v2(session, sim, call_id, key=WRONG_KEY)
    no_key = delete_v2(session, sim, call_id, key=None)
    unknown_server = delete_v2(session, sim, call_id, server="9")

    assert (bad_key.status_code, no_key.status_code) == (401, 401)
    assert unknown_server.status_code == 404
    assert unknown_server.json()["detail"] == "Server 9 is not configured"
    assert sim.calls()[0]["active"] is True


# -- expiry, convert, dismiss --------------------------------------------------------------


def test_delete_after_minutes_expires_calls_on_the_advanced_clock(
    sim: CadSimulator, session: requests.Session
) -> None:
    two_minutes = create_v1(session, sim, deleteAfterMinutes=2)
    one_minute = create_v2(session, sim, deleteAfterMinutes=1)
    never = create_v1(session, sim, deleteAfterMinutes=0)
    unset = create_v2(session, sim)

    sim.advance(59)
    before = listed_ids(read_v1(session, sim))
    sim.advance(1)
    after_one = listed_ids(read_v1(session, sim))
    sim.advance(60)
    after_two = listed_ids(read_v1(session, sim))
    sim.advance(10**6)

    assert before == [two_minutes, one_minute, never, unset]
    assert after_one == [two_minutes, never, unset]
    assert after_two == [never, unset]
    assert [c["callId"] for c in sim.active()] == [never, unset]
    records = {c["cad_id"]: c for c in sim.calls()}
    expired = records[one_minute]
    assert (expired["active"], expired["ended"]) == (False, "expired")
    assert expired["ended_at"] == pytest.approx(expired["at"] + 60)
    assert records[never]["ended"] is None


def test_convert_moves_the_call_into_a_dispatch_call_naming_its_origin(
    sim: CadSimulator, session: requests.Session
) -> None:
    call_id = create_v2(session, sim, server="7")

    dispatch_id = sim.convert(call_id)

    v1_answer = read_v1(session, sim, v1_read_body("7")).json()
    v2_answer = read_v2(session, sim, server="7", query="").json()
    assert dispatch_id > call_id
    assert v1_answer["emergencyCalls"] == v2_answer["EmergencyCalls"] == []
    [dispatch] = v1_answer["activeCalls"]
    assert dispatch == v2_answer["ActiveCalls"][0]
    assert dispatch["callId"] == dispatch_id
    assert dispatch["metaData"] == {"origin911Id": str(call_id)}
    assert read_v1(session, sim).json()["activeCalls"] == []  # server 1 has none
    assert sim.calls()[0]["ended"] == "converted"
    assert delete_v2(session, sim, call_id, server="7").status_code == 404
    with pytest.raises(ValueError, match="not in the emergency list"):
        sim.convert(call_id)


def test_dismiss_takes_the_call_off_the_list_without_a_dispatch_call(
    sim: CadSimulator, session: requests.Session
) -> None:
    call_id = create_v1(session, sim)

    sim.dismiss(call_id)

    answer = read_v1(session, sim).json()
    assert answer["emergencyCalls"] == answer["activeCalls"] == []
    assert sim.calls()[0]["ended"] == "dismissed"
    with pytest.raises(ValueError, match=re.escape(f"call {call_id} is not")):
        sim.dismiss(call_id)
    with pytest.raises(ValueError):
        sim.convert(123456)
