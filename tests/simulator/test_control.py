"""dispatcher.simulator.control: the control port reads records and switches faults."""

from __future__ import annotations

import json
import time

import pytest
import requests

from dispatcher.simulator import FIRST_CALL_ID, CadSimulator
from tests.simulator.simkit import (
    TIMEOUT,
    WRONG_KEY,
    control,
    created_id,
    post_v1,
    post_v2,
    read_v1,
    read_v2,
    v1_body,
)


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
    assert control(sim, "/fault", {"kind": "error", "route": "elsewhere"})[0] == 400
    assert control(sim, "/readback", {"enabled": "no"})[0] == 400
    assert control(sim, "/readback", {"v2_casing": "snake"})[0] == 400
    assert control(sim, "/endpoint-limit", {"per_minute": 3})[0] == 400
    assert control(sim, "/endpoint-limit", {"route": "read", "per_minute": -3})[0] == 400
    assert control(sim, "/advance", {"seconds": -1})[0] == 400
    assert control(sim, "/advance", {})[0] == 400
    assert control(sim, "/convert", {"cad_id": FIRST_CALL_ID})[0] == 400
    assert control(sim, "/dismiss", {"cad_id": "10001"})[0] == 400
    assert control(sim, "/nowhere", {})[0] == 404
    assert requests.get(f"{sim.control_url}/nowhere", timeout=TIMEOUT).status_code == 404
    bad_json = requests.post(f"{sim.control_url}/fault", data="{", timeout=TIMEOUT)
    assert bad_json.status_code == 400
    assert sim.received() == []  # control traffic is not API traffic


def test_control_server_drives_read_back_limits_clock_and_the_dispatcher(
    sim: CadSimulator, session: requests.Session
) -> None:
    assert control(sim, "/readback", {"enabled": False})[0] == 200
    assert read_v2(session, sim).status_code == 403
    control(sim, "/readback", {"enabled": True, "v1_metadata": False, "v2_casing": "camel"})
    assert "emergencyCalls" in read_v2(session, sim).json()

    expiring = created_id(post_v1(session, sim, v1_body(data=[{"deleteAfterMinutes": 1}])))
    converted = created_id(post_v2(session, sim))
    dismissed = created_id(post_v2(session, sim))
    status, active = control(sim, "/active")
    assert status == 200
    assert [c["callId"] for c in active] == [expiring, converted, dismissed]
    assert "metaData" not in read_v1(session, sim).json()["emergencyCalls"][0]

    assert control(sim, "/advance", {"seconds": 60})[0] == 200
    status, answer = control(sim, "/convert", {"cad_id": converted})
    assert status == 200
    assert answer["dispatch_id"] > dismissed
    assert control(sim, "/dismiss", {"cad_id": dismissed})[0] == 200
    assert control(sim, "/active?server_id=1")[1] == []
    assert [c["ended"] for c in sim.calls()] == ["expired", "converted", "dismissed"]

    limit = {"route": "read", "per_minute": 1}
    assert control(sim, "/endpoint-limit", limit) == (200, {"ok": True})
    assert read_v2(session, sim).status_code == 200
    assert read_v2(session, sim).status_code == 429
    control(sim, "/endpoint-limit", {"route": "read", "per_minute": None})
    assert read_v2(session, sim).status_code == 200


def test_control_server_sets_a_route_fault(sim: CadSimulator, session: requests.Session) -> None:
    status, answer = control(sim, "/fault", {"kind": "error", "count": 1, "route": "read"})

    assert (status, answer) == (200, {"ok": True, "fault": "error"})
    assert post_v1(session, sim).status_code == 200
    assert read_v1(session, sim).status_code == 503
    assert read_v1(session, sim).status_code == 200
