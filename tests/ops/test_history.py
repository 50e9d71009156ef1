"""The history series and its chart, on fakeredis with an injected clock."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from dispatcher.history import (
    KEEP,
    SAMPLE_EVERY_S,
    History,
    Sample,
    chart,
    nice_ceiling,
    points,
)
from tests.ops.conftest import Clock


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_tick_samples_once_per_period_and_keeps_an_hour(
    client: fakeredis.FakeRedis, clock: Clock
) -> None:
    history = History(client, clock=clock)
    client.hset("dispatcher:counters", "delivered", 5)
    client.zadd("dispatcher:held", {"a": 1, "b": 2})
    client.zadd("dispatcher:scheduled", {"c": 3})
    client.zadd("dispatcher:dead", {"d": 4})
    assert history.tick() is True
    assert history.tick() is False, "not due yet"
    (sample,) = history.samples()
    assert sample == Sample(clock.now, 3, 5, 1)
    for _ in range(KEEP + 20):
        clock.now += SAMPLE_EVERY_S
        assert history.tick() is True
    assert client.llen("dispatcher:history") == KEEP
    assert len(history.samples()) == KEEP


def test_two_schedulers_write_one_series(client: fakeredis.FakeRedis, clock: Clock) -> None:
    first, second = History(client, clock=clock), History(client, clock=clock)
    assert first.tick() is True
    clock.now += 1
    assert second.tick() is False, "the other scheduler sampled a second ago"
    clock.now += SAMPLE_EVERY_S
    assert second.tick() is True
    assert client.llen("dispatcher:history") == 2


def test_a_full_redis_does_not_stop_the_scheduler(clock: Clock) -> None:
    class Full(fakeredis.FakeRedis):
        def evalsha(self, *args: object, **kwargs: object) -> object:
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    history = History(Full(), clock=clock)
    assert history.tick() is False
    down = fakeredis.FakeServer()
    down.connected = False
    with pytest.raises(redis.ConnectionError):  # the scheduler's own loop handles these
        History(fakeredis.FakeRedis(server=down), clock=clock).tick()


def test_points_give_the_delivery_rate_and_mark_gaps() -> None:
    t = 1000.0
    samples = [Sample(t, 4, 10, 0), Sample(t + 10, 2, 13, 0), Sample(t + 20, 1, 13, 0),
               Sample(t + 200, 0, 20, 0), Sample(t + 210, 0, 2, 0)]
    pts = points(samples)
    assert [p.rate_per_min for p in pts] == [None, 18.0, 0.0, None, None]
    assert [p.gap_before for p in pts] == [False, False, False, True, False]


def test_chart_geometry() -> None:
    assert [nice_ceiling(v) for v in (0, 0.4, 1, 3.7, 12.5, 100, 101)] == [
        1, 1, 1, 5, 20, 100, 200]
    now = 10_000.0
    samples = [Sample(now - 3600 + 10 * i, i, 6 * i, 0) for i in range(10)]
    samples += [Sample(now - 60, 50, 100, 0), Sample(now - 50, 20, 110, 0)]
    c = chart(points(samples), now)
    assert c.depth_max == 50 and c.rate_max == 100
    assert c.depth_line.count("M") == 2, "a gap splits the line"
    assert c.depth_area.count("Z") == 2
    assert [label for _, label in c.x_ticks] == ["-60 min", "-45 min", "-30 min", "-15 min",
                                                 "now"]
    assert c.x_ticks[0][0] == c.left and c.x_ticks[-1][0] == c.right
    assert c.last_depth == 20 and c.last_rate == 60.0
    first = c.depth_line.split()[0]
    assert first == f"M{c.left:.1f},{c.bottom:.1f}", "the first sample: left edge, depth 0"
    empty = chart([], now)
    assert empty.samples == 0 and empty.depth_line == "" and empty.last_depth is None
