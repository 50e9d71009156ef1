"""The throttle scripts on their own (dispatcher/lua/login_attempt.lua,
login_failure.lua and ingest_bucket.lua), against the real Redis and fakeredis alike."""

from __future__ import annotations

import time

import pytest
import redis

from dispatcher.http.throttle import (
    FIRST_LOCKOUT_S,
    LOGIN_FAILURES,
    MAX_LOCKOUT_S,
    IngestRate,
    LoginThrottle,
)


@pytest.fixture
def client(both_redis: redis.Redis) -> redis.Redis:
    return both_redis


def _fail(throttle: LoginThrottle, addr: str) -> bool:
    """One login with a wrong token, as the page does it; True when it was compared."""
    if not throttle.check(addr).allowed:
        return False
    throttle.failed(addr)
    return True


def test_login_lockout_grows_and_a_success_forgets(client: redis.Redis) -> None:
    throttle = LoginThrottle(client, "t")
    for _ in range(LOGIN_FAILURES - 1):
        assert throttle.check("192.0.2.1").allowed
        assert throttle.failed("192.0.2.1").allowed
    assert throttle.check("192.0.2.1").allowed, "the last attempt of the window"
    locked = throttle.failed("192.0.2.1")
    assert not locked.allowed and locked.retry_after_s == FIRST_LOCKOUT_S
    assert not throttle.check("192.0.2.1").allowed
    assert throttle.check("192.0.2.2").allowed, "per address"
    client.delete("t:throttle:login:lock:192.0.2.1")  # the lock-out ran out
    assert sum(_fail(throttle, "192.0.2.1") for _ in range(LOGIN_FAILURES + 3)) == LOGIN_FAILURES
    assert client.ttl("t:throttle:login:lock:192.0.2.1") == 2 * FIRST_LOCKOUT_S, "doubles"
    client.delete("t:throttle:login:lock:192.0.2.1")
    client.set("t:throttle:login:strikes:192.0.2.1", 40)
    for _ in range(LOGIN_FAILURES):
        _fail(throttle, "192.0.2.1")
    assert client.ttl("t:throttle:login:lock:192.0.2.1") == MAX_LOCKOUT_S, "capped"
    assert all(client.ttl(k) > 0 for k in client.keys("t:throttle:*"))
    throttle.succeeded("192.0.2.1")
    assert throttle.check("192.0.2.1").allowed
    throttle.succeeded("192.0.2.1")
    assert client.keys("t:throttle:login:*:192.0.2.1") == []


def test_a_burst_of_attempts_gets_no_more_comparisons_than_the_window_allows(
    client: redis.Redis,
) -> None:
    """Every attempt's check runs before any failure is recorded (the worst interleaving
    of concurrent logins): still only LOGIN_FAILURES tokens may be compared."""
    throttle = LoginThrottle(client, "t")
    verdicts = [throttle.check("192.0.2.9") for _ in range(40)]
    assert sum(v.allowed for v in verdicts) == LOGIN_FAILURES
    assert verdicts[-1].retry_after_s == FIRST_LOCKOUT_S
    for _ in range(LOGIN_FAILURES):
        throttle.failed("192.0.2.9")
    assert int(client.get("t:throttle:login:strikes:192.0.2.9") or 0) == 1, "one lock-out"


def test_ingest_bucket_allows_the_rate_and_its_burst(client: redis.Redis) -> None:
    rate = IngestRate(client, 4.0, "t")
    verdicts = [rate.take("198.51.100.1") for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 4 + [False] * 2, "burst: one second"
    assert verdicts[-1].retry_after_s == 1
    assert rate.take("198.51.100.2").allowed, "per address"
    time.sleep(0.3)  # a quarter second refills one token
    assert rate.take("198.51.100.1").allowed
    assert not rate.take("198.51.100.1").allowed
    assert 0 < client.pttl("t:throttle:ingest:198.51.100.1") <= 2000
    slow = IngestRate(client, 0.1, "s")
    assert slow.take("a").allowed and not slow.take("a").allowed
    assert slow.take("a").retry_after_s in (9, 10), "one token per 10 s"
