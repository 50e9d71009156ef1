"""Tests for the CAD simulator, over real HTTP against a started simulator."""

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
import requests

from dispatcher.simulator import FIRST_CALL_ID, CadSimulator
from tests.conftest import SEED_CALL

COMMUNITY = "test-community"
KEY = "s3cr3t-Key-9f8e7d"
WRONG_KEY = "old-Key-1a2b3c4d"
TIMEOUT = 5.0
CALL: dict[str, Any] = SEED_CALL
V2_CALL: dict[str, Any] = {
    "isEmergency": False,
    "caller": "John Roe",
    "location": "Alta St",
    "description": "Noise complaint",
    "metaData": {"postal": "7015a"},
}


@pytest.fixture
def sim() -> Iterator[CadSimulator]:
    with CadSimulator(community_id=COMMUNITY, api_key=KEY, server_ids=("1", "7")) as simulator:
        yield simulator


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def v1_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": COMMUNITY, "key": KEY, "type": "CALL_911", "data": [CALL]}
    body.update(overrides)
    return body


def post_v1(
    session: requests.Session, sim: CadSimulator, body: Any = None, *, timeout: float = TIMEOUT
) -> requests.Response:
    payload = v1_body() if body is None else body
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return session.post(f"{sim.url}/emergency/call_911", data=data, timeout=timeout)


def post_v2(
    session: requests.Session,
    sim: CadSimulator,
    body: Any = None,
    *,
    server: str = "1",
    key: str | None = KEY,
    timeout: float = TIMEOUT,
) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    payload = V2_CALL if body is None else body
    data = payload if isinstance(payload, str) else json.dumps(payload)
    url = f"{sim.url}/v2/emergency/servers/{server}/calls/911"
    return session.post(url, data=data, headers=headers, timeout=timeout)


def control(sim: CadSimulator, path: str, body: dict[str, Any] | None = None) -> Any:
    if body is None and path in ("/received", "/calls", "/stats"):
        response = requests.get(f"{sim.control_url}{path}", timeout=TIMEOUT)
    else:
        response = requests.post(f"{sim.control_url}{path}", json=body or {}, timeout=TIMEOUT)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.status_code, response.json()


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


def test_v1_ids_are_numeric_and_increase(sim: CadSimulator, session: requests.Session) -> None:
    texts = [post_v1(session, sim).text for _ in range(3)]

    assert texts == [f"EMERGENCY CALL ADDED ID: {FIRST_CALL_ID + i}" for i in range(3)]
    assert [c["cad_id"] for c in sim.calls()] == [FIRST_CALL_ID + i for i in range(3)]


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


def test_set_credentials_changes_what_is_accepted(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_credentials(community_id="new-community", api_key="new-key-123")

    old = post_v1(session, sim)
    new = post_v1(session, sim, v1_body(id="new-community", key="new-key-123"))

    assert old.text == "INVALID COMMUNITY ID"
    assert new.status_code == 200


def test_keep_alive_serves_several_requests_on_one_connection(sim: CadSimulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=TIMEOUT)
    try:
        statuses = []
        sockets = []
        for _ in range(3):
            conn.request("POST", "/emergency/call_911", body=json.dumps(v1_body()))
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            sockets.append(conn.sock)
    finally:
        conn.close()

    assert statuses == [200, 200, 200]
    assert sockets[0] is not None
    assert all(s is sockets[0] for s in sockets)


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


# -- faults ------------------------------------------------------------------------------


def test_refuse_closes_the_port_and_clearing_rebinds_the_same_port(
    sim: CadSimulator, session: requests.Session
) -> None:
    port = sim.port
    assert post_v1(session, sim).status_code == 200  # leaves a keep-alive connection open

    sim.set_fault("refuse")

    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    assert len(sim.received()) == 1

    sim.clear_faults()

    assert sim.port == port
    assert post_v1(session, sim).status_code == 200
    assert len(sim.calls()) == 2


def test_refuse_ends_when_another_fault_is_set(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("refuse")
    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim)

    sim.set_fault("error", count=1)

    assert post_v1(session, sim).status_code == 503
    assert post_v1(session, sim).status_code == 200


def test_refuse_takes_no_count(sim: CadSimulator) -> None:
    with pytest.raises(ValueError):
        sim.set_fault("refuse", count=1)


def test_unknown_fault_kind_is_rejected(sim: CadSimulator) -> None:
    with pytest.raises(ValueError):
        sim.set_fault("explode")


def test_reset_fault_resets_the_connection_without_creating_a_call(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("reset")

    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim)

    [entry] = sim.received()
    assert (entry["status"], entry["fault"]) == (None, "reset")
    assert sim.calls() == []


def test_error_fault_answers_an_html_503_by_default(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("error")

    response = post_v1(session, sim)

    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "503 Service Temporarily Unavailable" in response.text
    assert sim.calls() == []
    assert sim.received()[0]["fault"] == "error"


def test_error_fault_takes_status_and_body(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_fault("error", status=500, body="<html>oops</html>")

    response = post_v2(session, sim)

    assert (response.status_code, response.text) == (500, "<html>oops</html>")


def test_ratelimit_fault_v1_answers_html_429_with_retry_after(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("ratelimit", retry_after=7)

    response = post_v1(session, sim)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["Content-Type"].startswith("text/html")
    assert "429" in response.text
    assert sim.calls() == []


def test_ratelimit_fault_v2_answers_json_and_omits_retry_after_when_none(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("ratelimit", retry_after=None)

    response = post_v2(session, sim)

    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.json() == {"message": "API rate limit exceeded", "status": 429}
    assert sim.calls() == []


def test_hang_fault_never_answers(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_fault("hang")

    with pytest.raises(requests.ReadTimeout):
        post_v1(session, sim, timeout=0.3)

    [entry] = sim.received()
    assert (entry["status"], entry["fault"]) == (None, "hang")
    assert sim.calls() == []


def test_hang_does_not_block_other_connections(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("hang", count=1)
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            post_v1(requests.Session(), sim, timeout=2.0)
        except requests.RequestException as exc:
            errors.append(exc)

    hanging = threading.Thread(target=hang)
    hanging.start()
    deadline = time.monotonic() + TIMEOUT
    while not sim.received() and time.monotonic() < deadline:
        time.sleep(0.01)

    assert post_v1(session, sim).status_code == 200

    sim.clear_faults()  # ends the hang: the connection closes without an answer
    hanging.join(timeout=TIMEOUT)
    assert not hanging.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], requests.ConnectionError)


def test_hang_ends_after_max_s_without_answering(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("hang", max_s=0.2)
    started = time.monotonic()

    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim, timeout=TIMEOUT)

    assert time.monotonic() - started < 2.0


def test_stop_is_quick_with_a_hanging_connection() -> None:
    sim = CadSimulator(community_id=COMMUNITY, api_key=KEY).start()
    sim.set_fault("hang")
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            post_v1(requests.Session(), sim)
        except requests.RequestException as exc:
            errors.append(exc)

    client = threading.Thread(target=hang)
    client.start()
    deadline = time.monotonic() + TIMEOUT
    while not sim.received() and time.monotonic() < deadline:
        time.sleep(0.01)

    started = time.monotonic()
    sim.stop()

    assert time.monotonic() - started < 1.0
    client.join(timeout=TIMEOUT)
    assert not client.is_alive()
    assert len(errors) == 1


def test_slow_fault_delays_then_answers_normally(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("slow", ms=150)
    started = time.monotonic()

    response = post_v1(session, sim)

    assert time.monotonic() - started >= 0.15
    assert response.status_code == 200
    assert len(sim.calls()) == 1
    assert sim.received()[0]["fault"] == "slow"


def test_reject_fault_v1_answers_the_permanent_400(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("reject")

    default = post_v1(session, sim)
    sim.set_fault("reject", text="API ID NOT LINKED TO AN ACCOUNT IN THIS COMMUNITY")
    custom = post_v1(session, sim)

    assert (default.status_code, default.text) == (400, "API IS NOT ENABLED FOR THIS COMMUNITY")
    assert (custom.status_code, custom.text) == (
        400,
        "API ID NOT LINKED TO AN ACCOUNT IN THIS COMMUNITY",
    )
    assert sim.calls() == []


def test_reject_fault_v2_answers_a_problem(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_fault("reject")
    default = post_v2(session, sim)
    sim.set_fault("reject", status=403)
    forbidden = post_v2(session, sim)

    assert default.status_code == 404
    assert default.headers["Content-Type"] == "application/problem+json"
    assert default.json()["status"] == 404
    assert forbidden.status_code == 403
    assert forbidden.json()["title"] == "Forbidden"
    assert sim.calls() == []


@pytest.mark.parametrize("version", [1, 2])
def test_commit_then_drop_creates_the_call_but_never_answers(
    sim: CadSimulator, session: requests.Session, version: int
) -> None:
    sim.set_fault("commit_then_drop")

    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim) if version == 1 else post_v2(session, sim)

    assert len(sim.calls()) == 1
    [entry] = sim.received()
    assert (entry["status"], entry["fault"]) == (None, "commit_then_drop")


def test_html200_fault_answers_a_portal_page_without_creating_a_call(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("html200")

    response = post_v1(session, sim)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "EMERGENCY CALL ADDED" not in response.text
    assert sim.calls() == []


def test_empty_fault_answers_an_empty_body(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_fault("empty")
    default = post_v1(session, sim)
    sim.set_fault("empty", status=504)
    gateway = post_v2(session, sim)

    assert (default.status_code, default.content) == (502, b"")
    assert default.headers["Content-Length"] == "0"
    assert (gateway.status_code, gateway.content) == (504, b"")


def test_fault_count_applies_to_exactly_n_requests(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("error", count=2)

    statuses = [post_v1(session, sim).status_code for _ in range(4)]

    assert statuses == [503, 503, 200, 200]
    assert [e["fault"] for e in sim.received()] == ["error", "error", None, None]


def test_a_new_fault_replaces_the_old_one(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_fault("error")
    sim.set_fault("empty", count=1)

    assert post_v1(session, sim).status_code == 502
    assert post_v1(session, sim).status_code == 200


# -- rate limit --------------------------------------------------------------------------


def test_rate_limit_v1_answers_429_with_retry_after_and_creates_nothing(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_rate_limit(2, window_s=60.0)

    statuses = [post_v1(session, sim).status_code for _ in range(2)]
    limited = post_v1(session, sim)

    assert statuses == [200, 200]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["Content-Type"].startswith("text/html")
    assert len(sim.calls()) == 2
    assert sim.stats()["by_status"] == {"200": 2, "429": 1}


def test_rate_limit_v2_answers_json_with_reset_headers(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_rate_limit(1, window_s=30.0)

    assert post_v2(session, sim).status_code == 200
    limited = post_v2(session, sim)

    assert limited.status_code == 429
    assert limited.json() == {"message": "API rate limit exceeded", "status": 429}
    assert 1 <= int(limited.headers["Retry-After"]) <= 30
    assert 1 <= int(limited.headers["RateLimit-Reset"]) <= 30
    assert len(sim.calls()) == 1


def test_rate_limit_uses_the_given_retry_after(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_rate_limit(1, window_s=60.0, retry_after=5)

    post_v1(session, sim)
    limited = post_v1(session, sim)

    assert limited.headers["Retry-After"] == "5"


def test_rate_limit_window_slides_and_ignores_rejected_requests(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_rate_limit(1, window_s=0.3)
    started = time.monotonic()

    first = post_v1(session, sim)
    time.sleep(0.15)
    limited = post_v1(session, sim)
    # Past the first request's window but inside the 429's: it must not have counted.
    time.sleep(max(0.0, started + 0.33 - time.monotonic()))
    after = post_v1(session, sim)

    assert [first.status_code, limited.status_code, after.status_code] == [200, 429, 200]
    assert limited.headers["Retry-After"] == "1"


def test_rate_limit_can_be_disabled(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_rate_limit(0)
    assert post_v1(session, sim).status_code == 429

    sim.set_rate_limit(None)

    assert post_v1(session, sim).status_code == 200


# -- latency -----------------------------------------------------------------------------


def test_latency_delays_answers_without_serialising_them() -> None:
    with CadSimulator(community_id=COMMUNITY, api_key=KEY, latency_ms=100) as sim:

        def timed_post(_: int) -> tuple[int, float]:
            started = time.monotonic()
            response = requests.post(
                f"{sim.url}/emergency/call_911", json=v1_body(), timeout=TIMEOUT
            )
            return response.status_code, time.monotonic() - started

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(timed_post, range(50)))
        total = time.monotonic() - started

        assert all(status == 200 for status, _ in results)
        assert all(elapsed >= 0.1 for _, elapsed in results)
        assert total < 0.9
        assert len({c["cad_id"] for c in sim.calls()}) == 50


def test_set_latency_changes_the_delay(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_latency(120)
    started = time.monotonic()
    post_v1(session, sim)
    slow = time.monotonic() - started

    sim.set_latency(0)
    started = time.monotonic()
    post_v1(session, sim)

    assert slow >= 0.12
    assert time.monotonic() - started < 0.12


# -- secrecy -----------------------------------------------------------------------------


def test_api_key_never_appears_in_records_or_control_output(
    sim: CadSimulator, session: requests.Session
) -> None:
    post_v1(session, sim)
    post_v1(session, sim, v1_body(key=WRONG_KEY))
    post_v1(session, sim, json.dumps(v1_body())[:-5])  # truncated: not valid JSON
    post_v2(session, sim)
    post_v2(session, sim, key=WRONG_KEY)
    sim.set_fault("commit_then_drop", count=1)
    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim)

    records = sim.received()
    dumps = json.dumps(records) + json.dumps(sim.calls()) + json.dumps(sim.stats())
    served = "".join(
        requests.get(f"{sim.control_url}{p}", timeout=TIMEOUT).text
        for p in ("/received", "/calls", "/stats")
    )

    for secret in (KEY, WRONG_KEY):
        assert secret not in dumps
        assert secret not in served
    assert len(records) == 6
    assert records[0]["body"]["key"] == "***"
    assert '"key": "***"' in records[0]["raw"]
    assert records[2]["body"] is None
    assert records[3]["headers"]["Authorization"] == "***"


# -- control server ----------------------------------------------------------------------


def test_control_server_reads_records_and_stats(
    sim: CadSimulator, session: requests.Session
) -> None:
    post_v1(session, sim)
    post_v1(session, sim)  # the same call again: a duplicate in the CAD
    post_v1(session, sim, v1_body(key=WRONG_KEY))

    status, stats = control(sim, "/stats")
    _, calls = control(sim, "/calls")
    _, received = control(sim, "/received")

    assert status == 200
    assert stats == sim.stats()
    assert stats["received"] == 3
    assert stats["created"] == 2
    assert stats["by_status"] == {"200": 2, "400": 1}
    assert stats["duplicates"] == 1
    assert [c["cad_id"] for c in calls] == [FIRST_CALL_ID, FIRST_CALL_ID + 1]
    assert [e["seq"] for e in received] == sorted(e["seq"] for e in received)
    assert [e["status"] for e in received] == [200, 200, 400]


def test_control_server_sets_and_clears_faults(
    sim: CadSimulator, session: requests.Session
) -> None:
    assert control(sim, "/fault", {"kind": "error", "count": 1, "status": 500})[0] == 200
    assert post_v1(session, sim).status_code == 500
    assert post_v1(session, sim).status_code == 200

    control(sim, "/fault", {"kind": "empty"})
    assert post_v1(session, sim).status_code == 502
    control(sim, "/clear")
    assert post_v1(session, sim).status_code == 200


def test_control_server_works_while_the_api_refuses(
    sim: CadSimulator, session: requests.Session
) -> None:
    control(sim, "/fault", {"kind": "refuse"})
    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim)

    assert control(sim, "/stats")[0] == 200
    control(sim, "/clear")

    assert post_v1(session, sim).status_code == 200


def test_control_server_sets_latency_rate_limit_and_credentials(
    sim: CadSimulator, session: requests.Session
) -> None:
    control(sim, "/latency", {"ms": 100})
    started = time.monotonic()
    post_v1(session, sim)
    assert time.monotonic() - started >= 0.1
    control(sim, "/latency", {"ms": 0})

    control(sim, "/rate-limit", {"max_requests": 0, "window_s": 10, "retry_after": 3})
    limited = post_v1(session, sim)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    control(sim, "/rate-limit", {"max_requests": None})

    status, answer = control(sim, "/credentials", {"community_id": "c2", "api_key": "k2-secret"})
    assert status == 200
    assert "k2-secret" not in json.dumps(answer)
    assert post_v1(session, sim, v1_body(id="c2", key="k2-secret")).status_code == 200


def test_control_server_reset_clears_records_faults_and_limits_but_keeps_credentials(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_credentials(api_key="kept-key-77")
    post_v1(session, sim, v1_body(key="kept-key-77"))
    sim.set_fault("error")
    sim.set_rate_limit(0)

    control(sim, "/reset")

    assert sim.received() == []
    assert sim.calls() == []
    response = post_v1(session, sim, v1_body(key="kept-key-77"))
    assert response.status_code == 200
    # Ids are never reused, so a client holding an old id cannot confuse it with a new one.
    assert response.text == f"EMERGENCY CALL ADDED ID: {FIRST_CALL_ID + 1}"


def test_control_server_rejects_bad_requests(sim: CadSimulator) -> None:
    assert control(sim, "/fault", {"kind": "explode"})[0] == 400
    assert control(sim, "/fault", {"count": 1})[0] == 400
    assert control(sim, "/fault", {"kind": "refuse", "count": 2})[0] == 400
    assert control(sim, "/fault", {"kind": "slow", "ms": "soon"})[0] == 400
    assert control(sim, "/fault", {"kind": "error", "status": 999})[0] == 400
    assert control(sim, "/credentials", {"api_key": 12345})[0] == 400
    assert control(sim, "/nowhere", {})[0] == 404
    assert requests.get(f"{sim.control_url}/nowhere", timeout=TIMEOUT).status_code == 404
    bad_json = requests.post(f"{sim.control_url}/fault", data="{", timeout=TIMEOUT)
    assert bad_json.status_code == 400
    assert sim.received() == []  # control traffic is not API traffic


# -- serve() -----------------------------------------------------------------------------


def test_serve_prints_one_line_without_the_key_and_stops_on_sigterm() -> None:
    code = f"from dispatcher.simulator import serve; serve('127.0.0.1', 0, {COMMUNITY!r}, {KEY!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        urls = re.findall(r"http://127\.0\.0\.1:\d+", line)
        assert len(urls) == 2
        api_url, control_url = urls
        response = requests.post(f"{api_url}/emergency/call_911", json=v1_body(), timeout=TIMEOUT)
        assert response.status_code == 200
        assert requests.get(f"{control_url}/stats", timeout=TIMEOUT).json()["created"] == 1

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 0
    assert KEY not in line
    assert out == ""
    assert err == ""
