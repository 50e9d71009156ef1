"""WEB_CONCURRENCY: the web door in several processes sharing one port."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, wait_for
from tests.http.httpkit import call_keys, queued_ids, seed_body, seed_call, start_web

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by a parent that itself exited) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def test_two_processes_serve_one_port_restart_a_dead_one_and_stop_together(
    redis_url: str, rclient: redis.Redis, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    web = start_web(procs, base_env(redis_url, sim, WEB_CONCURRENCY=2))
    wait_for(lambda: len(_children(web.proc.pid)) == 2, 30, message="two web processes")
    first = _children(web.proc.pid)

    ids = [queued_ids(web.v1(seed_body([seed_call(i)])))[0] for i in range(20)]
    assert call_keys(rclient) == set(ids)

    # One process dies: the other keeps answering, and the parent starts a new one.
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    more = [queued_ids(web.v1(seed_body([seed_call(i)])))[0] for i in range(20, 30)]
    assert call_keys(rclient) == set(ids + more)
    wait_for(lambda: len(_children(web.proc.pid)) == 2 and victim not in
             _children(web.proc.pid), 30, message="a new web process")
    assert "starting another" in web.proc.output()

    # SIGTERM to the parent stops every process and ends cleanly: exit code 0, no child
    # restarted while stopping (the one restart is the killed victim's), none failed.
    children = _children(web.proc.pid)
    web.proc.signal(signal.SIGTERM)
    wait_for(lambda: not web.proc.alive(), 15, message="the web parent to stop")
    output = web.proc.output()
    assert web.proc.proc.returncode == 0, output
    assert output.count("starting another") == 1, output
    assert re.search(r"web: process \d+ failed", output) is None, output
    wait_for(lambda: all(_gone(c) for c in children), 10, message="every web process gone")
