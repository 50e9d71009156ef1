"""A recovered CAD is used within seconds, whatever the outage's length (issue 15, goal 3).

The CAD refuses connections, then answers 503 for the outage's last 8 s (so the probes
show in its records), then answers again. With the default breaker settings a probe
goes every DISPATCHER_CIRCUIT_COOLDOWN_S (2 s): the first held call must reach the CAD
at most 3 s after it answers again, the probes during the 503s must come at most one a
cooldown, and the backlog then drains oldest first within the rate limit, each call once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from dispatcher.call import Call
from dispatcher.producer import Producer
from dispatcher.settings import DEFAULT_CIRCUIT_COOLDOWN_S, Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALLS = 12
RATE = 4.0
ANSWERING_503_S = 8.0
#: The goal: the first held call at the CAD at most this long after it answers again.
RECOVERY_S = 3.0


@pytest.mark.parametrize("outage_s", [20.0, 180.0], ids=["20s", "3min"])
def test_a_recovered_cad_gets_the_first_held_call_within_3s(
    outage_s: float, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
) -> None:
    env = base_env(redis_url, sim, DISPATCHER_MAX_RATE=str(RATE))
    sim.set_fault("refuse")
    procs(["scheduler"], env)
    procs(["worker"], env)
    producer = Producer(Settings.from_env(env))
    try:
        for i in range(CALLS):
            producer.enqueue(Call.create(caller=f"Caller {i:02d}", location="L",
                                         description="D"))
            time.sleep(0.01)  # distinct enqueue times: the line's order is theirs
    finally:
        producer.close()

    time.sleep(outage_s - ANSWERING_503_S)
    sim.set_fault("error", status=503)
    errors_from = time.time()
    time.sleep(ANSWERING_503_S)
    sim.clear_faults()
    back = time.time()

    wait_for(lambda: len(sim.calls()) >= CALLS, 60, message="every call after the outage")
    time.sleep(1.0)  # a duplicate would have arrived by now
    created = sorted(sim.calls(), key=lambda c: c["at"])
    recovery = created[0]["at"] - back
    probes = [r for r in sim.received() if errors_from <= r["at"] < back]
    times = [c["at"] for c in created]
    pace = (len(times) - 1) / (times[-1] - times[0])
    print(f"\n[chaos] recovery after {outage_s:.0f}s down: first call {recovery:.2f}s after "
          f"the CAD answered; {len(probes)} probes in its last {ANSWERING_503_S:.0f}s of "
          f"503s; drained at {pace:.2f}/s (limit {RATE:g})")

    assert recovery <= RECOVERY_S, f"the first held call came {recovery:.2f}s after recovery"
    assert 1 <= len(probes) <= ANSWERING_503_S / DEFAULT_CIRCUIT_COOLDOWN_S + 1, \
        "at most one probe per cooldown while the CAD is down"
    assert all(r["status"] == 503 for r in probes)
    callers = [c["call"]["caller"] for c in created]
    assert callers == [f"Caller {i:02d}" for i in range(CALLS)], "oldest first, once each"
    assert pace <= RATE * 1.02
