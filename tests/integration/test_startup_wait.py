"""A scheduler, bridge or web process starting while Redis is down for a moment (being
restarted, a container starting beside it) waits for it instead of exiting; one that
stays down gets the one-line error."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from dispatcher.cli.console import CliError
from dispatcher.cli.processes import ping
from dispatcher.settings import Settings
from tests.conftest import Proc, RedisServer, base_env, wait_for

pytestmark = pytest.mark.integration


def test_ping_waits_for_a_redis_that_comes_up_and_fails_for_one_that_does_not() -> None:
    server = RedisServer(appendonly=False)
    late = threading.Timer(1.5, server.start)
    late.start()
    try:
        t0 = time.monotonic()
        ping(Settings(redis_url=server.url), wait_s=10)
        assert 1.0 < time.monotonic() - t0 < 8
    finally:
        late.join()
        server.stop()
    t0 = time.monotonic()
    with pytest.raises(CliError, match="cannot reach Redis at redis://127.0.0.1"):
        ping(Settings(redis_url=server.url), wait_s=1)
    assert time.monotonic() - t0 < 5


def test_a_scheduler_started_while_redis_restarts_rides_it_out(
    procs: Callable[..., Proc],
) -> None:
    server = RedisServer(appendonly=False)
    try:
        scheduler = procs(["scheduler"], base_env(server.url))
        time.sleep(2)
        assert scheduler.alive(), scheduler.output()
        server.start()
        wait_for(lambda: "scheduler: started" in scheduler.output(), 30,
                 message=f"the scheduler started\n{scheduler.output()}")
        assert scheduler.alive()
    finally:
        server.stop()
