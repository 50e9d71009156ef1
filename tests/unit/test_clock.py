"""dispatcher.clock: one clock, Redis's, measured against a real Redis from a host whose
wall clock is made wrong by patching ``time.time``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from dispatcher import clock
from dispatcher.call import Call
from dispatcher.heartbeat import Heartbeats
from dispatcher.producer import Producer
from dispatcher.records import Records
from dispatcher.settings import Settings
from tests.unit.conftest import API_KEY as KEY
from tests.unit.conftest import COMMUNITY

REAL_TIME = time.time


@pytest.fixture(autouse=True)
def fresh_clock() -> Iterator[None]:
    clock._reset()
    yield
    clock._reset()


def skew(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """This host's wall clock ``seconds`` from the truth (negative: behind)."""
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + seconds)


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def time_calls(client: redis.Redis) -> int:
    """How many TIME commands this Redis has answered since it started."""
    stats = client.info("commandstats").get("cmdstat_time", {})
    return int(stats.get("calls", 0))


def test_a_host_40s_behind_measures_its_offset_and_logs_its_skew_once(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    skew(monkeypatch, -40.0)
    assert not clock.synced()
    with caplog.at_level(logging.INFO, logger="dispatcher.clock"):
        measured = clock.sync(rclient)
        clock.sync(rclient)  # the same skew again: no second line
    assert clock.synced()
    assert measured == pytest.approx(40.0, abs=0.05)
    assert clock.now() == pytest.approx(redis_now(rclient), abs=0.05)
    assert time.time() == pytest.approx(redis_now(rclient) - 40.0, abs=0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "dispatcher.clock"]
    assert len(lines) == 1 and all(r.levelno == logging.INFO for r in caplog.records)
    assert "-40.0" in lines[0] and "clock skew" in lines[0], lines


def test_a_small_offset_is_not_logged(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    skew(monkeypatch, 0.2)
    with caplog.at_level(logging.INFO, logger="dispatcher.clock"):
        assert clock.sync(rclient) == pytest.approx(-0.2, abs=0.05)
    assert [r for r in caplog.records if r.name == "dispatcher.clock"] == []


class SlowFirstAnswer:
    """A real Redis client whose first TIME answer arrives 0.3 s late (a slow round trip:
    the midpoint of that one is off by up to 0.15 s)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.calls = 0

    def time(self) -> Any:
        self.calls += 1
        answer = self.client.time()
        if self.calls == 1:
            time.sleep(0.3)
        return answer


def test_the_sample_with_the_shortest_round_trip_is_kept(rclient: redis.Redis) -> None:
    slow = SlowFirstAnswer(rclient)
    measured, rtt = clock.measure(slow, samples=3)
    assert slow.calls == 3
    assert rtt < 0.1
    assert measured == pytest.approx(0.0, abs=0.02)  # the slow one alone would be ~ -0.15


def test_now_makes_no_round_trip(rclient: redis.Redis) -> None:
    clock.sync(rclient)
    before = time_calls(rclient)
    for _ in range(1000):
        clock.now()
    assert time_calls(rclient) == before


def test_sync_if_due_measures_again_after_resync_s_and_follows_a_step(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clock, "RESYNC_S", 0.5)
    skew(monkeypatch, -40.0)
    clock.sync_if_due(rclient)  # never measured: now
    assert clock.offset() == pytest.approx(40.0, abs=0.05)
    skew(monkeypatch, -10.0)  # NTP steps this host's clock by 30 s
    before = time_calls(rclient)
    clock.sync_if_due(rclient)  # measured 0 s ago: nothing
    assert time_calls(rclient) == before
    assert clock.offset() == pytest.approx(40.0, abs=0.05)
    time.sleep(0.6)
    clock.sync_if_due(rclient)
    assert clock.offset() == pytest.approx(10.0, abs=0.05)
    assert clock.now() == pytest.approx(redis_now(rclient), abs=0.05)


def test_an_unreachable_redis_keeps_the_offset_and_is_tried_again_later(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    skew(monkeypatch, 5.0)
    clock.sync(rclient)
    down = redis.Redis(port=26401, socket_connect_timeout=0.5)  # nothing listens there
    monkeypatch.setattr(clock, "RESYNC_S", 0.0)
    monkeypatch.setattr(clock, "RETRY_S", 0.3)
    assert clock.sync_quietly(down) is False
    assert clock.offset() == pytest.approx(-5.0, abs=0.05)
    clock.sync_if_due(rclient)  # within RETRY_S of the failure: not yet
    skew(monkeypatch, 7.0)
    assert clock.offset() == pytest.approx(-5.0, abs=0.05)
    time.sleep(0.4)
    clock.sync_if_due(rclient)
    assert clock.offset() == pytest.approx(-7.0, abs=0.05)


def _settings(url: str) -> Settings:
    return Settings.from_env({"REDIS_URL": url, "SONORAN_COMMUNITY_ID": COMMUNITY,
                              "SONORAN_API_KEY": KEY, "DISPATCHER_MAX_RATE": "0"})


def test_a_producer_on_a_skewed_host_stamps_calls_with_redis_time(
    redis_url: str, rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    skew(monkeypatch, -40.0)
    producer = Producer(_settings(redis_url))
    try:
        call_id = producer.enqueue(Call.create(caller="C", location="L", description="D"))
    finally:
        producer.close()
    record = Records(rclient).get(call_id)
    assert record is not None and record.enqueued_at is not None
    assert record.enqueued_at == pytest.approx(redis_now(rclient), abs=1.0)
    score = rclient.zscore("dispatcher:pending", call_id)
    assert score is not None and abs(score - redis_now(rclient)) < 1.0


def test_a_heartbeat_from_a_skewed_host_is_on_redis_time_and_alive(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    skew(monkeypatch, -40.0)  # 40 s: past three 10 s intervals on the host's own clock
    clock.sync(rclient)
    Heartbeats(rclient).beat("a@host-a/1")
    entry = json.loads(rclient.hget("dispatcher:heartbeats", "a@host-a/1") or b"{}")
    assert entry["at"] == pytest.approx(redis_now(rclient), abs=0.5)
    skew(monkeypatch, 20.0)  # a reader on a host 20 s ahead
    clock.sync(rclient)
    (beat,) = Heartbeats(rclient).all()
    assert beat.alive and beat.age_s < 1.0


def test_announce_logs_the_measured_skew_again_and_only_when_large(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="dispatcher.clock"):
        clock.announce()  # never measured: nothing to say
        skew(monkeypatch, 0.1)
        clock.sync(rclient)
        clock.announce()  # too small to mention
        assert caplog.records == []
        skew(monkeypatch, 3.0)
        clock.sync(rclient)
        clock.announce()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0] == lines[1] and "+3.0" in lines[0], lines


def test_the_worker_heartbeat_thread_measures_the_clock_when_due(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dispatcher.heartbeat import HeartbeatThread

    skew(monkeypatch, -40.0)
    thread = HeartbeatThread(Heartbeats(rclient), "a@host-a/1")
    thread._beat_once()  # never measured in this process: the first beat measures
    assert clock.offset() == pytest.approx(40.0, abs=0.05)
    entry = json.loads(rclient.hget("dispatcher:heartbeats", "a@host-a/1") or b"{}")
    assert entry["at"] == pytest.approx(redis_now(rclient), abs=0.5)
