"""dispatcher.simulator.faults: each fault's answer (or non-answer), its count, its end."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from dispatcher.simulator import CadSimulator
from tests.simulator.simkit import (
    TIMEOUT,
    created_id,
    delete_v2,
    post,
    post_v1,
    post_v2,
    read_v1,
    read_v2,
    remove_v1,
    remove_v1_body,
)


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


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("retry_after", [7, None])
def test_ratelimit_fault_answers_429_with_retry_after_only_when_set(
    sim: CadSimulator, session: requests.Session, version: int, retry_after: int | None
) -> None:
    sim.set_fault("ratelimit", retry_after=retry_after)

    response = post(version, session, sim)

    assert response.status_code == 429
    assert response.headers.get("Retry-After") == (None if retry_after is None
                                                   else str(retry_after))
    if version == 1:  # a proxy's page in front of the CAD
        assert response.headers["Content-Type"].startswith("text/html")
        assert "429" in response.text
    else:
        assert response.json() == {"message": "API rate limit exceeded", "status": 429}
    assert sim.calls() == []


def test_hang_fault_never_answers(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_fault("hang")

    with pytest.raises(requests.ReadTimeout):
        post_v1(session, sim, timeout=0.3)

    [entry] = sim.received()
    assert (entry["status"], entry["fault"]) == (None, "hang")
    assert sim.calls() == []


def test_hang_ends_after_max_s_without_answering(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("hang", max_s=0.2)

    # A hang that did not end would be a ReadTimeout, which is not a ConnectionError.
    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim, timeout=TIMEOUT)

    [entry] = sim.received()
    assert (entry["status"], entry["fault"]) == (None, "hang")


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
        post(version, session, sim)

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


# -- commit_then_hang ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_commit_then_hang_creates_the_call_and_never_answers(
    sim: CadSimulator, session: requests.Session, version: int
) -> None:
    sim.set_fault("commit_then_hang")

    with pytest.raises(requests.ReadTimeout):
        post(version, session, sim, timeout=0.3)

    assert len(sim.calls()) == 1
    assert sim.calls()[0]["active"] is True
    [entry] = sim.received()
    assert (entry["status"], entry["fault"]) == (None, "commit_then_hang")


def test_commit_then_hang_ends_after_max_s_or_when_cleared(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("commit_then_hang", max_s=0.2)
    # A hang that did not end would be a ReadTimeout, which is not a ConnectionError.
    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim, timeout=TIMEOUT)

    sim.set_fault("commit_then_hang")
    errors: list[BaseException] = []

    def client() -> None:
        try:
            post_v1(requests.Session(), sim, timeout=TIMEOUT)
        except requests.RequestException as exc:
            errors.append(exc)

    hanging = threading.Thread(target=client)
    hanging.start()
    deadline = time.monotonic() + TIMEOUT
    while len(sim.calls()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    sim.clear_faults()
    hanging.join(timeout=TIMEOUT)

    assert not hanging.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], requests.ConnectionError)
    assert len(sim.calls()) == 2


def test_commit_faults_on_routes_that_create_nothing_do_not_handle_the_request(
    sim: CadSimulator, session: requests.Session
) -> None:
    call_id = created_id(post_v2(session, sim))
    sim.set_endpoint_limit("remove", 1)
    sim.set_fault("commit_then_drop", count=2)

    with pytest.raises(requests.ConnectionError):
        delete_v2(session, sim, call_id)
    with pytest.raises(requests.ConnectionError):
        remove_v1(session, sim, remove_v1_body(call_id))
    sim.set_fault("commit_then_hang", count=1, max_s=0.2)
    with pytest.raises(requests.ConnectionError):
        delete_v2(session, sim, call_id)

    assert sim.calls()[0]["active"] is True  # reset or hung: nothing was removed
    # Nor did they use the one delete a minute allowed.
    assert delete_v2(session, sim, call_id).status_code == 200


# -- route-scoped faults -------------------------------------------------------------------


def test_a_route_fault_applies_to_and_is_used_up_by_that_route_only(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("error", count=1, route="read")

    created = post_v1(session, sim)
    removed = remove_v1(session, sim, remove_v1_body(created_id(created)))
    read_failed = read_v2(session, sim)
    read_ok = read_v2(session, sim)

    assert (created.status_code, removed.status_code) == (200, 200)
    assert (read_failed.status_code, read_ok.status_code) == (503, 200)
    assert [e["fault"] for e in sim.received()] == [None, None, "error", None]
    assert [e["route"] for e in sim.received()] == ["create", "remove", "read", "read"]


@pytest.mark.parametrize(
    ("route", "hit"),
    [("create", "create"), ("remove", "remove"), ("other", "other"), (None, "every")],
)
def test_each_route_scopes_its_fault(
    sim: CadSimulator, session: requests.Session, route: str | None, hit: str
) -> None:
    call_id = created_id(post_v1(session, sim))
    sim.set_fault("empty", route=route)

    statuses = {
        "create": post_v2(session, sim).status_code,
        "read": read_v1(session, sim).status_code,
        "remove": delete_v2(session, sim, call_id).status_code,
        "other": session.get(f"{sim.url}/emergency/call_911", timeout=TIMEOUT).status_code,
    }

    healthy = {"create": 200, "read": 200, "remove": 200, "other": 404}
    expected = {r: 502 if hit in (r, "every") else s for r, s in healthy.items()}
    assert statuses == expected


def test_a_route_fault_hangs_only_its_route(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("hang", route="create")

    with pytest.raises(requests.ReadTimeout):
        post_v1(session, sim, timeout=0.3)
    with requests.Session() as other:
        assert read_v1(other, sim).status_code == 200


@pytest.mark.parametrize(
    ("kind", "route"), [("error", "delete"), ("error", "CREATE"), ("refuse", "create")]
)
def test_bad_fault_routes_are_rejected(sim: CadSimulator, kind: str, route: str) -> None:
    with pytest.raises(ValueError) as info:
        sim.set_fault(kind, route=route)

    assert "\n" not in str(info.value)
