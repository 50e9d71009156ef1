"""Redis connections: short timeouts, bounded retries, our own error on failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import redis
import tenacity

from dispatcher.errors import QueueUnavailable
from dispatcher.settings import Settings

T = TypeVar("T")

#: Longest a producer waits for Redis before it raises QueueUnavailable.
QUEUE_WAIT_S = 3.0
#: Socket timeouts: Redis answers in microseconds; anything slower is an outage.
CONNECT_TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 5.0


def connect(settings: Settings, **overrides: object) -> redis.Redis:
    """A client for REDIS_URL; no connection is opened until first use."""
    options: dict[str, object] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "health_check_interval": 15,
        "retry_on_timeout": False,
    }
    options.update(overrides)
    return redis.Redis.from_url(settings.redis_url, **options)  # type: ignore[arg-type]


def bounded(
    fn: Callable[[], T],
    wait_s: float = QUEUE_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn``, retrying Redis connection errors for up to ``wait_s``; then QueueUnavailable."""
    try:
        return fn()  # the common case, without building a retry loop (producer profile)
    except (redis.ConnectionError, redis.TimeoutError):
        pass
    except redis.ResponseError as exc:
        raise QueueUnavailable(f"the queue (Redis) refused the write: {_why(exc)}") from None
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
        stop=tenacity.stop_after_delay(wait_s),
        wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(fn)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise QueueUnavailable(
            f"the queue (Redis) could not be reached within {wait_s:g}s: {_why(exc)}"
        ) from None
    except redis.ResponseError as exc:
        # OOM under noeviction, READONLY replica, MISCONF on a failed save: the queue
        # refuses writes; nothing was stored.
        raise QueueUnavailable(f"the queue (Redis) refused the write: {_why(exc)}") from None


def _why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
