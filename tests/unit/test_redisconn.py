"""dispatcher.redisconn: the one Redis error classifier and the bounded wait."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest
import redis

from dispatcher.errors import QueueUnavailable
from dispatcher.redisconn import bounded, refusal, transient


def failing(*errors: Exception, then: str = "ok") -> Callable[[], str]:
    """A function raising ``errors`` one per call, then returning ``then``."""
    left = list(errors)
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if left:
            raise left.pop(0)
        return then

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def test_bounded_returns_at_once_when_redis_answers(
        recording_sleep: Callable[..., None]) -> None:
    assert bounded(failing(), 3.0, recording_sleep) == "ok"
    assert recording_sleep.calls == []  # type: ignore[attr-defined]


def test_bounded_waits_out_a_short_outage_backing_off(
        recording_sleep: Callable[..., None]) -> None:
    fn = failing(redis.ConnectionError("refused"), redis.TimeoutError("slow"),
                 redis.ConnectionError("refused"))

    assert bounded(fn, 60.0, recording_sleep) == "ok"

    sleeps = recording_sleep.calls  # type: ignore[attr-defined]
    # The first failure goes straight to the retry loop; each further one sleeps longer.
    assert len(fn.calls) == 4  # type: ignore[attr-defined]
    assert len(sleeps) == 2 and 0 < sleeps[0] < sleeps[1]


def test_bounded_gives_up_with_queue_unavailable_after_the_wait() -> None:
    fn = failing(*[redis.ConnectionError("Connection refused")] * 5)

    with pytest.raises(QueueUnavailable, match=r"could not be reached within 0s: Connection"):
        bounded(fn, 0.0, lambda s: None)


@pytest.mark.parametrize("after_outage", [False, True])
def test_bounded_translates_a_refused_write_without_retrying_it(after_outage: bool) -> None:
    oom = redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
    fn = failing(*([redis.ConnectionError("x")] if after_outage else []), oom)

    with pytest.raises(QueueUnavailable, match="refused the write: OOM command"):
        bounded(fn, 60.0, lambda s: None)
    assert len(fn.calls) == (2 if after_outage else 1)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("exc", "expected"), [
    (redis.ConnectionError("down"), True),
    (redis.TimeoutError("slow"), True),
    (redis.BusyLoadingError("LOADING Redis is loading the dataset"), True),
    (redis.ResponseError("OOM command not allowed"), True),
    (redis.ResponseError("LOADING Redis is loading the dataset"), True),
    (redis.ReadOnlyError("READONLY You can't write against a read only replica"), False),
    (redis.ResponseError("ERR unknown command"), False),
    (redis.AuthenticationError("WRONGPASS"), True),
    (ValueError("not Redis"), False),
])
def test_transient_says_which_errors_are_worth_waiting_out(exc: Exception,
                                                           expected: bool) -> None:
    assert transient(exc) is expected


@pytest.mark.parametrize(("exc", "says"), [
    (redis.AuthenticationError("invalid password"), "credentials"),
    (redis.ResponseError("WRONGPASS invalid username-password pair"), "credentials"),
    (redis.ConnectionError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
     "certificate could not be verified"),
    (ssl.SSLError("wrong version number"), "TLS with Redis failed"),
    (redis.ConnectionError("Connection refused"), None),
])
def test_refusal_names_configuration_errors_only(exc: Exception, says: str | None) -> None:
    reason = refusal(exc)
    assert (reason is None) if says is None else (reason is not None and says in reason)
