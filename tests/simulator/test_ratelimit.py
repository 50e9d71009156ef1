"""dispatcher.simulator.ratelimit: a sliding window per key; what v1 and v2 answer over it."""

from __future__ import annotations

import time

import pytest
import requests

from dispatcher.simulator import CadSimulator
from tests.simulator.simkit import (
    KEY,
    WRONG_KEY,
    created_id,
    delete_v2,
    post,
    post_v1,
    post_v2,
    read_v1,
    read_v2,
)


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


# -- v2 per-endpoint limits --------------------------------------------------------------


def test_v2_get_calls_allows_five_a_minute_per_key_by_default(
    sim: CadSimulator, session: requests.Session
) -> None:
    statuses = [read_v2(session, sim).status_code for _ in range(5)]
    limited = read_v2(session, sim)
    other_key = read_v2(session, sim, key=WRONG_KEY)  # its own budget: the 401, not a 429
    creates = [post_v2(session, sim).status_code for _ in range(3)]  # create has its own

    assert statuses == [200] * 5
    assert limited.status_code == 429
    assert limited.headers["Content-Type"].startswith("application/json")
    assert limited.json()["message"] == "API rate limit exceeded"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert (other_key.status_code, creates) == (401, [200] * 3)


def test_v2_delete_allows_ten_a_minute_and_the_window_frees_on_the_clock(
    sim: CadSimulator, session: requests.Session
) -> None:
    ids = [created_id(post_v2(session, sim)) for _ in range(11)]

    statuses = [delete_v2(session, sim, i).status_code for i in ids[:10]]
    limited = delete_v2(session, sim, ids[10])
    sim.advance(30)
    still = delete_v2(session, sim, ids[10])
    sim.advance(30)
    freed = delete_v2(session, sim, ids[10])

    assert statuses == [200] * 10
    assert limited.status_code == 429
    assert 59 <= int(limited.headers["Retry-After"]) <= 60
    assert still.status_code == 429
    assert 29 <= int(still.headers["Retry-After"]) <= 30
    assert freed.status_code == 200
    assert sim.stats()["removed"] == 11  # the refused deletes removed nothing


def test_endpoint_limits_do_not_cover_v1(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_endpoint_limit("create", 1)

    reads = [read_v1(session, sim).status_code for _ in range(8)]
    creates = [post_v1(session, sim).status_code for _ in range(3)]

    assert reads == [200] * 8
    assert creates == [200] * 3


def test_endpoint_limits_can_be_set_per_route_and_turned_off(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_endpoint_limit("create", 2)
    sim.set_endpoint_limit("read", None)

    creates = [post_v2(session, sim).status_code for _ in range(3)]
    reads = [read_v2(session, sim).status_code for _ in range(8)]
    sim.set_endpoint_limit("read", 0)
    refused = read_v2(session, sim)
    sim.reset()
    defaults = [read_v2(session, sim).status_code for _ in range(6)]

    assert creates == [200, 200, 429]
    assert reads == [200] * 8
    assert refused.status_code == 429
    assert defaults == [200] * 5 + [429]


def test_global_limit_still_counts_reads(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_rate_limit(1, window_s=30.0)

    first = read_v1(session, sim)
    second = read_v2(session, sim)

    assert (first.status_code, second.status_code) == (200, 429)


@pytest.mark.parametrize(
    ("route", "per_minute"),
    [("other", 5), ("delete", 5), ("read", -1), ("read", 2.5), ("read", True), ("read", "5")],
)
def test_set_endpoint_limit_rejects_bad_values(
    sim: CadSimulator, route: str, per_minute: object
) -> None:
    with pytest.raises(ValueError):
        sim.set_endpoint_limit(route, per_minute)  # type: ignore[arg-type]


def test_endpoint_limit_windows_are_per_key(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_endpoint_limit("read", 1)
    sim.set_credentials(api_key="second-key-42")

    # The old key's refusal (401) used its own window, not the new key's.
    old = read_v2(session, sim, key=KEY)
    new = read_v2(session, sim, key="second-key-42")

    assert (old.status_code, new.status_code) == (401, 200)
