"""Worker heartbeats on fakeredis with an injected clock (no sleeping)."""

from __future__ import annotations

import threading

import fakeredis
import pytest
import redis

from dispatcher.heartbeat import (
    ALIVE_INTERVALS,
    FORGET_AFTER_S,
    Heartbeats,
    HeartbeatThread,
    worker_name,
)
from tests.ops.conftest import Clock


@pytest.fixture
def beats(clock: Clock) -> Heartbeats:
    return Heartbeats(fakeredis.FakeRedis(), "dispatcher", clock=clock)


def test_a_worker_is_alive_for_three_intervals_after_its_last_beat(
    beats: Heartbeats, clock: Clock
) -> None:
    beats.beat("w1", interval=10, started_at=clock.now, concurrency=8)
    (beat,) = beats.alive()
    assert beat.name == "w1" and beat.concurrency == 8 and beat.started_at == clock.now
    clock.now += ALIVE_INTERVALS * 10 - 0.1
    assert [b.name for b in beats.alive()] == ["w1"]
    clock.now += 0.2
    assert beats.alive() == []
    (stale,) = beats.all()
    assert stale.alive is False and stale.to_json()["alive"] is False


def test_each_worker_is_judged_by_its_own_interval(beats: Heartbeats, clock: Clock) -> None:
    beats.beat("fast", interval=1)
    beats.beat("slow", interval=60)
    clock.now += 10
    assert [b.name for b in beats.alive()] == ["slow"]
    assert sorted(b.name for b in beats.all()) == ["fast", "slow"]


def test_goodbye_removes_at_once_and_old_entries_are_forgotten(
    beats: Heartbeats, clock: Clock
) -> None:
    beats.beat("leaving")
    beats.beat("crashed")
    beats.goodbye("leaving")
    assert [b.name for b in beats.all()] == ["crashed"]
    clock.now += FORGET_AFTER_S + 1
    beats.beat("new")
    assert [b.name for b in beats.all()] == ["new"]


def test_an_unreadable_entry_is_no_proof_of_life(beats: Heartbeats) -> None:
    beats.client.hset(beats.key, "garbage", "not json")
    beats.client.hset(beats.key, "partial", '{"at": 1}')
    assert beats.all() == []


def test_the_thread_beats_and_says_goodbye_on_stop(beats: Heartbeats) -> None:
    thread = HeartbeatThread(beats, worker_name("celery@host"), interval=0.01).start()
    try:
        assert thread.name.startswith("celery@host/")
        for _ in range(200):
            if beats.alive():
                break
            threading.Event().wait(0.01)
        assert [b.name for b in beats.alive()] == [thread.name]
    finally:
        thread.stop()
    assert beats.all() == []


def test_the_thread_survives_redis_errors() -> None:
    class Broken(Heartbeats):
        calls = 0

        def beat(self, *args: object, **kwargs: object) -> None:
            Broken.calls += 1
            raise redis.ConnectionError("down")

        def goodbye(self, name: str) -> None:
            raise redis.ConnectionError("down")

    thread = HeartbeatThread(Broken(fakeredis.FakeRedis()), "w", interval=0.01).start()
    for _ in range(200):
        if Broken.calls >= 3:
            break
        threading.Event().wait(0.01)
    thread.stop()  # neither beat nor goodbye raise out of the thread or stop()
    assert Broken.calls >= 3
    assert not thread._thread.is_alive()
