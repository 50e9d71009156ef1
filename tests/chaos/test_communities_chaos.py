"""Two communities, one worker: one community's CAD is down with a backlog of 2,000 calls
while the other's calls are delivered at its own rate limit, all of them, once each."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatcher.call import Call
from dispatcher.producer import Producer
from dispatcher.settings import Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PACED_KEY = "paced-key-5b1e9d7c3a"
DOWN_KEY = "down-key-8f2a6c4e0b"
RATE = 5.0  # the paced community's max_rate: calls per second
CALLS, BACKLOG = 40, 2000


@pytest.fixture
def cads() -> Iterator[tuple[CadSimulator, CadSimulator]]:
    paced = CadSimulator(community_id="paced-1", api_key=PACED_KEY).start()
    down = CadSimulator(community_id="down-2", api_key=DOWN_KEY).start()
    yield paced, down
    paced.stop()
    down.stop()


def test_a_down_cad_with_a_backlog_never_slows_another_communitys_pace(
    redis_url: str, cads: tuple[CadSimulator, CadSimulator], procs: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    paced, down = cads
    path = tmp_path / "communities.toml"
    path.write_text(f"""
[communities.paced]
id = "paced-1"
key = "{PACED_KEY}"
api_url = "{paced.url}"
max_rate = {RATE}
default = true

[communities.down]
id = "down-2"
key = "{DOWN_KEY}"
api_url = "{down.url}"
max_rate = 20
""")
    env = base_env(redis_url, DISPATCHER_COMMUNITIES=str(path), DISPATCHER_MAX_BACKLOG="0",
                   DISPATCHER_CIRCUIT_COOLDOWN_S="1", DISPATCHER_CIRCUIT_MAX_COOLDOWN_S="2")
    down.set_fault("refuse")  # connections refused for the whole test
    base = Producer(Settings.from_env(env))
    backlog = base.of("down")
    backlog.enqueue_many([Call.create(caller=f"Down {i}", location="L", description="D")
                          for i in range(BACKLOG)])
    procs(["scheduler"], env)
    procs(["worker"], env)
    time.sleep(3.0)  # the down community's breaker opens; its calls wait

    started = time.time()
    for i in range(CALLS):  # a burst: the rate limit spreads it out
        base.of("paced").enqueue(Call.create(caller=f"Paced {i}", location="L",
                                             description="D"))
    wait_for(lambda: len(paced.calls()) >= CALLS, CALLS / RATE + 30,
             message="every paced call")
    times = sorted(c["at"] for c in paced.calls())
    rate = (len(times) - 1) / (times[-1] - times[0])
    first_wait = times[0] - started
    time.sleep(1.0)  # a duplicate would have arrived by now

    print(f"\n[chaos] communities: paced {len(times)} calls at {rate:.3f}/s (limit {RATE}), "
          f"first after {first_wait:.2f}s, beside {BACKLOG} calls of a down CAD")
    assert sorted(c["call"]["caller"] for c in paced.calls()) == sorted(
        f"Paced {i}" for i in range(CALLS))
    assert paced.stats()["duplicates"] == 0
    # Never above its limit; below it by no more than the pacing's own error on a busy
    # machine (about 3 % alone, docs/PERFORMANCE.md), not held back by the other's outage.
    assert 0.9 * RATE <= rate <= 1.02 * RATE, f"paced at {rate:.3f}/s, limit {RATE}/s"
    assert first_wait < 2.0
    stats = base.of("down").lifecycle.client.zcard("dispatcher@down:pending")
    assert stats == BACKLOG  # still waiting, none lost, none sent
    assert down.calls() == []
