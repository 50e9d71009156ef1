"""dispatcher.simulator.faults: each fault's answer (or non-answer), its count, its end."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from dispatcher.simulator import CadSimulator
from tests.simulator.simkit import TIMEOUT, post, post_v1, post_v2


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
