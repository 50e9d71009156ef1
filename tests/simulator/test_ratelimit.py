"""dispatcher.simulator.ratelimit: a sliding window per key; what v1 and v2 answer over it."""

from __future__ import annotations

import time

import pytest
import requests

from dispatcher.simulator import CadSimulator
from tests.simulator.simkit import post, post_v1


@pytest.mark.parametrize("version", [1, 2])
def test_over_the_limit_answers_429_with_retry_after_and_creates_nothing(
    sim: CadSimulator, session: requests.Session, version: int
) -> None:
    sim.set_rate_limit(2, window_s=30.0)

    statuses = [post(version, session, sim).status_code for _ in range(2)]
    limited = post(version, session, sim)

    assert statuses == [200, 200]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 30
    assert len(sim.calls()) == 2
    assert sim.stats()["by_status"] == {"200": 2, "429": 1}
    if version == 1:  # a proxy's page in front of the CAD
        assert limited.headers["Content-Type"].startswith("text/html")
    else:
        assert limited.json() == {"message": "API rate limit exceeded", "status": 429}
        assert 1 <= int(limited.headers["RateLimit-Reset"]) <= 30


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
