"""Pacing at the limit with real processes: a worker and a scheduler at
DISPATCHER_MAX_RATE=2 against a CAD counting a 10 s sliding window (20 requests), a
backlog larger than the run needs. The sends are spaced by when they left (the worker
reports each departure to the send gate), so the pace sits within 1 % of the limit
(asserted: 2 %, for a busy CI machine) and the CAD never answers 429."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from dispatcher.call import Call
from dispatcher.producer import Producer
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 2.0
MEASURED = 30  # arrivals measured, after the first few



def test_a_backlog_is_paced_within_one_percent_of_the_limit_without_a_429(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    producer_for: Callable[[dict[str, str]], Producer],
) -> None:
    sim.set_rate_limit(int(RATE * 10), window_s=10.0, retry_after=1)
    env = base_env(redis_url, sim, DISPATCHER_MAX_RATE=RATE)
    procs(["scheduler"], env)
    procs(["worker"], env)
    p = producer_for(env)
    for i in range(MEASURED + 10):
        p.enqueue(Call.create(caller=f"Caller {i}", location="Route 68",
                              description=f"pacing {i}", postal="350"))
    wait_for(lambda: len(sim.calls()) >= MEASURED + 3, 60, 0.2, message="the backlog sent")
    time.sleep(0.1)

    statuses = sim.stats()["by_status"]
    arrivals = sorted(c["at"] for c in sim.calls())[2:MEASURED + 3]
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    print(f"\n[pacing] {len(arrivals)} arrivals, {achieved:.4f}/s at {RATE:g}/s, {statuses}")
    assert statuses.get("429", 0) == 0, statuses
    # The goal is within 1 % (0.8 % is our margin); 2 % leaves room for a busy CI machine
    # and still fails the old 3 % margin.
    assert RATE * 0.98 <= achieved <= RATE, achieved
