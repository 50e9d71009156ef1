"""Several machines, one Redis, wrong clocks (libfaketime): host a, 40 s behind, runs a
worker and a scheduler; host b, right, a worker and the producer; host c, 20 s ahead,
a second scheduler and the web door. They share one community whose CAD rate-limits at
the community's own rate (or, unpaced, answers in 1.5 s: the leases matter). Every call
is delivered once, none is answered 429, no live lease is taken for a dead worker's, and
both workers show alive: every process times Redis state by Redis's clock
(dispatcher/clock.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatcher.call import Call
from dispatcher.cli.embedded import free_port
from dispatcher.producer import Producer
from dispatcher.settings import Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import ROOT, Proc, base_env, run_cli, wait_for

pytestmark = [
    pytest.mark.integration, pytest.mark.slow,
    pytest.mark.skipif(shutil.which("faketime") is None,
                       reason="faketime (Debian's libfaketime) is not installed; "
                              "scripts/test installs it"),
]

RATE = 4.0  # DISPATCHER_MAX_RATE, and the CAD's own limit ("paced")
CALLS = 40
SLOW_CAD_MS = 1500  # "slow CAD": no rate limit, every call in flight for 1.5 s
#: Puts a repair of time.sleep under libfaketime on the faked processes' path.
FAKETIME_SITE = Path(__file__).parent / "faketime_site"


def skewed(seconds: str) -> list[str]:
    """A command prefix that runs a process with its wall clock moved by ``seconds``."""
    return ["faketime", "-f", seconds]


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback
        return str(answer.read().decode())


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def dispatcher_stats(env: dict[str, str]) -> dict[str, Any]:
    done = run_cli(["stats", "--json"], env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("case", ["paced", "slow_cad"])
def test_hosts_with_skewed_clocks_deliver_every_call_once_within_the_rate(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc], case: str,
) -> None:
    paced = case == "paced"
    if paced:
        # The CAD counts requests over a window of several intervals (as bench/pacing.py
        # models it: 10 R in any 10 s): a sustained excess, like two hosts sending back
        # to back, is answered 429. The send gate spaces the sends by when they left
        # (each worker reports its departure, timed by Redis's clock), so one send that
        # leaves late (a thread descheduled on a loaded CI machine) pushes the next ones
        # back instead of crowding a window; the 0.7 % margin leaves ~60 ms a window
        # for jitter on the way. (With go-spacing and a 3 % margin, a 5 s window once
        # saw a 429 in CI.)
        sim.set_rate_limit(int(RATE * 10), window_s=10.0, retry_after=1)
    else:
        sim.set_latency(SLOW_CAD_MS)
    port = free_port()
    env = base_env(redis_url, sim, DISPATCHER_MAX_RATE=RATE if paced else 0, PORT=port,
                   DISPATCHER_WEB_HOST="127.0.0.1")
    faked = dict(env, FAKETIME_DONT_FAKE_MONOTONIC="1",
                 PYTHONPATH=os.pathsep.join(
                     [str(FAKETIME_SITE), *filter(None, [env.get("PYTHONPATH")])]))
    # Check the skew is real before relying on it.
    shown = subprocess.run([*skewed("-40s"), "date", "+%s"], env=faked, capture_output=True,
                           text=True, check=True).stdout
    assert abs(int(shown) - (time.time() - 40)) < 3, "faketime did not move the clock"

    scheduler = procs(["scheduler"], faked, name="scheduler-c+20s", prefix=skewed("+20s"))
    scheduler_a = procs(["scheduler"], faked, name="scheduler-a-40s", prefix=skewed("-40s"))
    web = procs(["web"], faked, name="web+20s", prefix=skewed("+20s"))
    a = procs(["worker", "-n", "a@host-a", "--concurrency", "4"], faked, name="worker-a-40s",
              prefix=skewed("-40s"))
    b = procs(["worker", "-n", "b@host-b", "--concurrency", "4"], env, name="worker-b")
    base = f"http://127.0.0.1:{port}"

    def workers() -> dict[str, bool]:
        try:
            health = json.loads(fetch(f"{base}/healthz"))
        except OSError:
            return {}
        return {w["name"].split("/")[0]: w["alive"] for w in health["workers"]["list"]}

    wait_for(lambda: {"a@host-a", "b@host-b"} <= set(workers()), 60,
             message="both workers' first heartbeat")

    producer = Producer(Settings.from_env(env))  # this host: the true time
    try:
        for i in range(CALLS):  # a burst: the shared rate limit spreads it out
            producer.enqueue(Call.create(caller=f"Caller {i}", location="L",
                                         description="D"))
    finally:
        producer.close()
    wait_for(lambda: dispatcher_stats(env)["delivered"] >= CALLS, CALLS / RATE + 60, 0.5,
             message="every call delivered")
    time.sleep(3.0)  # a reclaimed lease's second send would arrive by now

    cad = sim.stats()
    arrivals = sorted(c["at"] for c in sim.calls())
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    stats = dispatcher_stats(env)
    metrics = fetch(f"{base}/metrics")
    seen = workers()
    sent_by = {name: p.output().count("delivered as CAD call") for name, p in
               (("a@host-a", a), ("b@host-b", b))}
    print(f"\n[chaos] three hosts (a -40 s: worker, scheduler; b: worker; c +20 s: "
          f"scheduler, web), {case}: {len(arrivals)} calls at {achieved:.3f}/s "
          f"(limit {RATE if paced else 'none'}), smallest gap {min(gaps):.3f}s, answers "
          f"{cad['by_status']}, leases expired "
          f"{metric(metrics, 'dispatcher_leases_expired_total'):g}, sent by {sent_by}, "
          f"workers alive {seen}")

    assert sorted(c["call"]["caller"] for c in sim.calls()) == sorted(
        f"Caller {i}" for i in range(CALLS)), "every call, once"
    assert cad["duplicates"] == 0 and cad["duplicate_tags"] == 0
    assert cad["by_status"].get("429", 0) == 0, "two hosts sent beyond the shared rate"
    assert stats["delivered"] == CALLS and stats["rate_limited"] == 0
    assert stats["possible_duplicates"] == 0
    assert metric(metrics, "dispatcher_leases_expired_total") == 0, "a live lease reclaimed"
    if paced:
        assert achieved <= RATE * 1.02
        assert min(gaps) > 0.5 / RATE, "two sends back to back"
    assert seen == {"a@host-a": True, "b@host-b": True}
    assert all(n >= 1 for n in sent_by.values()), f"both hosts send calls: {sent_by}"
    # Each faked process names its skew once, as its clock's offset from Redis's.
    assert re.search(r"this host's clock is -40\.\d+s from Redis's", a.output()), a.output()
    assert re.search(r"this host's clock is \+20\.\d+s from Redis's", scheduler.output())
    assert "from Redis's" not in b.output()
    assert web.alive() and scheduler.alive() and scheduler_a.alive()


def test_a_cli_command_on_a_host_100s_ahead_reads_ages_on_redis_time(
    redis_url: str, sim: CadSimulator,
) -> None:
    env = base_env(redis_url, sim)
    producer = Producer(Settings.from_env(env))
    try:
        producer.enqueue(Call.create(caller="C", location="L", description="D"))
    finally:
        producer.close()
    faked = dict(env, FAKETIME_DONT_FAKE_MONOTONIC="1",
                 PYTHONPATH=os.pathsep.join(
                     [str(FAKETIME_SITE), *filter(None, [env.get("PYTHONPATH")])]))
    done = subprocess.run([*skewed("+100s"), sys.executable, "-m", "dispatcher", "stats",
                           "--json"], env=faked, capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["queued"] == 1  # no worker: the call waits
    assert 0 <= stats["oldest_age_s"] < 5, stats  # not ~100 s, this host's clock
