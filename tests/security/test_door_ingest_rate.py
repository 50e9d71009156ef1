"""Rows "one producer can bury everyone" (the door's share: DISPATCHER_INGEST_RATE per
source address, shared by every web process through Redis) and refusals logged as one
line per source per minute with a count."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from dispatcher.http.refusals import WINDOW_S, RefusalLog
from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, Proc, base_env
from tests.http.httpkit import seed_body, seed_call, start_web

pytestmark = pytest.mark.integration


def test_the_ingest_rate_is_kept_per_address_by_all_web_processes(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    web = start_web(procs, base_env(redis_url, sim, DISPATCHER_INGEST_RATE="2",
                                    WEB_CONCURRENCY="2"))
    statuses: Counter[int] = Counter()
    for i in range(40):  # as fast as one client goes: ~1 s at most on this machine
        # A forged X-Forwarded-For buys nothing while no proxy is trusted.
        answer = web.v1(seed_body([seed_call(i)]), **{"X-Forwarded-For": f"198.51.100.{i}"})
        statuses[answer.status_code] += 1
        if answer.status_code == 429:
            assert answer.text.startswith("TOO MANY REQUESTS: at most 2 per second from one "
                                          "address (DISPATCHER_INGEST_RATE)"), answer.text
            assert int(answer.headers["Retry-After"]) >= 1
    assert set(statuses) == {200, 429}, statuses
    assert statuses[200] <= 6, f"2 per second and a burst of 2, two processes: {statuses}"
    v2 = web.v2(json.dumps({"caller": "a", "location": "b", "description": "c"}))
    assert v2.status_code == 429, v2.text
    assert v2.headers["Content-Type"].startswith("application/problem+json")
    assert v2.json()["status"] == 429 and int(v2.headers["Retry-After"]) >= 1
    client = redis.Redis.from_url(redis_url)
    (bucket,) = client.keys("dispatcher:throttle:ingest:*")
    assert bucket == b"dispatcher:throttle:ingest:127.0.0.1", "the peer's address, one bucket"
    assert client.pttl(bucket) > 0
    client.close()
    # Dozens of refusals, but one line each per process and minute (the first, whole).
    log = web.proc.output()
    lines = [line for line in log.splitlines() if "TOO MANY REQUESTS" in line]
    assert 1 <= len(lines) <= 2, lines
    assert API_KEY not in log


def test_requests_without_the_key_do_not_spend_the_budget_of_real_calls(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    """Game servers behind one address (a NAT, an untrusted proxy) share a bucket: a
    stranger's junk must not get their 911 calls refused."""
    web = start_web(procs, base_env(redis_url, sim, DISPATCHER_INGEST_RATE="1"))
    for _ in range(20):
        assert web.v1(seed_body([seed_call()], key="not-the-key")).status_code == 400
        assert web.v1("{not json").status_code == 400
        assert web.v2(json.dumps({"caller": "a"}), key="wrong").status_code == 401
    real = web.v1(seed_body([seed_call()]))
    assert real.status_code == 200, real.text


def test_a_flood_of_wrong_keys_is_one_line_per_minute_per_source(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    web = start_web(procs, base_env(redis_url, sim))
    for _ in range(200):
        assert web.v1(seed_body([seed_call()], key="not-the-key")).status_code == 400
    log = web.proc.output()
    assert len(re.findall(r"http v1: 400 INVALID API KEY from 127\.0\.0\.1", log)) == 1, log


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusal_log_sums_up_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    refusals = RefusalLog(logging.getLogger("test.refusals"), clock=clock, sweep_s=None)
    with caplog.at_level(logging.INFO, logger="test.refusals"):
        for i in range(500):
            clock.now += 0.05  # 25 s of refusals from one source
            refusals.refused("198.51.100.7", f"http v1: 400 INVALID API KEY #{i}")
        refusals.refused("198.51.100.8", "http v1: 401 other")
        assert [r.getMessage() for r in caplog.records] == [
            "http v1: 400 INVALID API KEY #0 from 198.51.100.7",
            "http v1: 401 other from 198.51.100.8"]
        clock.now += WINDOW_S
        refusals.sweep()
        assert caplog.records[-1].getMessage() == (
            "499 more refusals from 198.51.100.7 in the last minute (last: http v1: 400 "
            "INVALID API KEY #499)")
        assert len(caplog.records) == 3, "a source with nothing more says nothing more"
        refusals.refused("198.51.100.7", "http v1: 400 again")  # still counted (busy source)
        clock.now += WINDOW_S
        refusals.sweep()
        assert caplog.records[-1].getMessage().startswith("1 more refusal from 198.51.100.7")
        clock.now += WINDOW_S
        refusals.sweep()  # quiet for a minute: forgotten, the next one is logged whole
        refusals.refused("198.51.100.7", "http v1: 400 later")
        assert caplog.records[-1].getMessage() == "http v1: 400 later from 198.51.100.7"
