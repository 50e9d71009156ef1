"""Latency when healthy: enqueue to CAD receipt, against a direct POST and plain Celery.

One CAD simulator (0 ms latency, no rate limit) in this process; every call carries its
enqueue time in its description, and its latency is the simulator's receipt time
(``calls()[i]["at"]``, same clock) minus that time. Calls are sent one at a time,
``--interval-ms`` apart, so each meets an idle system. Sides, in turn in every run:

- ours: ``enqueue_call`` with ``python -m dispatcher worker`` and ``scheduler``
  running (DISPATCHER_MAX_RATE=0, default concurrency) on a private Redis;
- direct ``requests.post`` from the producer to the CAD (a new connection each time,
  as a game server's script would), and a direct ``requests.Session().post``
  (a kept-alive connection): the floor;
- plain Celery: ``send_task`` to a bare Celery app whose task only POSTs
  (``--pool threads -c 8``, its own private Redis).

- idle (``--idle-calls K``): after the runs, K times, every side quiet for ``--idle-s``
  (60 s), then one call each: the latency of a call after a quiet minute (connections
  and health checks gone stale), ours against plain Celery and the direct POSTs.

    .venv/bin/python bench/latency.py [--calls 100] [--interval-ms 50] [--runs 3]
                                      [--idle-calls 3 --idle-s 60] [--json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from common import (
    API_KEY,
    COMMUNITY,
    dispatcher_proc,
    emit,
    enqueue_seed,
    machine,
    median_of_runs,
    percentile,
    plain_celery,
    plain_worker,
    private_redis,
    product_env,
    progress,
    ratio,
    rnd,
    seed_call,
    wait_for,
)

from dispatcher import Producer  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.simulator import CadSimulator  # noqa: E402

SIDES = ["ours", "direct requests.post", "direct Session.post", "plain celery"]


def _received(sim: CadSimulator, tag: str) -> dict[int, float]:
    """Receipt time of each call whose description starts with tag, by its number."""
    out: dict[int, float] = {}
    for record in sim.calls():
        desc = str(record["call"].get("description", ""))
        if desc.startswith(tag + " "):
            _, i, t0 = desc.rsplit(" ", 2)
            out[int(i)] = record["at"] - float(t0)
    return out


def measure(sim: CadSimulator, tag: str, send: Callable[[int, str], Any], calls: int,
            interval_s: float) -> dict[str, Any]:
    for i in range(calls):
        t0 = time.time()
        send(i, f"{tag} {i} {t0!r}")
        time.sleep(max(0.0, interval_s - (time.time() - t0)))
    got = wait_for(lambda: (lambda r: r if len(r) >= calls else None)(_received(sim, tag)),
                   120, 0.05, f"{calls} calls of {tag}")
    lat = list(got.values())
    return {"p50_ms": rnd(percentile(lat, 50) * 1000, 3),
            "p99_ms": rnd(percentile(lat, 99) * 1000, 3),
            "max_ms": rnd(max(lat) * 1000, 3), "calls": len(lat)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per side and run")
    parser.add_argument("--interval-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-calls", type=int, default=0,
                        help="calls after a quiet --idle-s, per side (0: none)")
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    idle: dict[str, list[float]] = {name: [] for name in SIDES}
    folder = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    sim = CadSimulator(community_id=COMMUNITY, api_key=API_KEY).start()
    url = sim.url + "/emergency/call_911"
    envelope = {"id": COMMUNITY, "key": API_KEY, "type": "CALL_911"}
    procs = []
    runs: list[dict[str, Any]] = []
    try:
        with private_redis(folder, "redis-ours") as ours_redis, \
                private_redis(folder, "redis-plain") as plain_redis:
            env = product_env(ours_redis.url, sim.url, DISPATCHER_MAX_RATE="0")
            procs += [dispatcher_proc("worker", env, folder),
                      dispatcher_proc("scheduler", env, folder)]
            procs.append(plain_worker(folder, plain_redis.url, sim.url, 8))
            producer = Producer(Settings.from_env(env))
            celery_app = plain_celery(plain_redis.url)
            session = requests.Session()

            def ours(i: int, desc: str) -> None:
                enqueue_seed(producer, i, desc)

            def direct(i: int, desc: str) -> None:
                requests.post(url, json={**envelope, "data": [seed_call(i, desc)]},
                              timeout=(3.05, 10)).raise_for_status()

            def kept(i: int, desc: str) -> None:
                session.post(url, json={**envelope, "data": [seed_call(i, desc)]},
                             timeout=(3.05, 10)).raise_for_status()

            def plain(i: int, desc: str) -> None:
                celery_app.send_task("plain.post", args=[seed_call(i, desc)])

            senders = {"ours": ours, "direct requests.post": direct,
                       "direct Session.post": kept, "plain celery": plain}
            progress("latency: waiting for the workers")
            for name, send in senders.items():  # warm up every path, workers ready
                measure(sim, f"warm-{name.replace(' ', '_')}", send, 10, args.interval_ms / 1000)
            for r in range(args.runs):
                order = SIDES[r % len(SIDES):] + SIDES[:r % len(SIDES)]
                run: dict[str, Any] = {}
                for name in order:
                    progress(f"latency: run {r + 1}/{args.runs}: {name}")
                    run[name] = measure(sim, f"r{r}-{name.replace(' ', '_')}", senders[name],
                                        args.calls, args.interval_ms / 1000)
                runs.append(run)
            for k in range(args.idle_calls):
                progress(f"latency: idle {k + 1}/{args.idle_calls}: quiet for {args.idle_s:g} s")
                time.sleep(args.idle_s)
                for name in SIDES:
                    got = measure(sim, f"idle{k}-{name.replace(' ', '_')}", senders[name], 1, 0)
                    idle[name].append(got["max_ms"])
            producer.close()
            celery_app.close()
            for p in procs:
                p.stop()
    finally:
        for p in procs:
            p.stop()
        sim.stop()
        shutil.rmtree(folder, ignore_errors=True)
    rows = median_of_runs(runs)
    base = rows["plain celery"]
    for name in SIDES:
        rows[name]["p50_vs_plain_celery"] = ratio(rows[name]["p50_ms"], base["p50_ms"])
        rows[name]["p99_vs_plain_celery"] = ratio(rows[name]["p99_ms"], base["p99_ms"])
    result = {
        "figure": "latency",
        "command": f"bench/latency.py --calls {args.calls} --interval-ms {args.interval_ms:g} "
                   f"--runs {args.runs}",
        "machine": machine(),
        "runs": args.runs,
        "rows": rows,
        "per_run_p50_ms": {name: [r[name]["p50_ms"] for r in runs] for name in SIDES},
        "goals": {"p50 no worse than plain Celery's":
                  rows["ours"]["p50_ms"] <= rows["plain celery"]["p50_ms"],
                  "p99 no worse than plain Celery's":
                  rows["ours"]["p99_ms"] <= rows["plain celery"]["p99_ms"]},
    }
    if args.idle_calls:
        result["command"] += f" --idle-calls {args.idle_calls} --idle-s {args.idle_s:g}"
        result["idle_ms"] = idle
        result["goals"]["a call after a quiet spell: <= 5 ms"] = max(idle["ours"]) <= 5.0
    emit(result, args.json, render)
    return 0


def render(result: dict[str, Any]) -> str:
    lines = [f"{'enqueue -> CAD receipt':24} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>6} {'p99 x':>6}"]
    for name, row in result["rows"].items():
        lines.append(f"{name:24} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
                     f"{row['p50_vs_plain_celery']:6.2f} {row['p99_vs_plain_celery']:6.2f}")
    lines.append(f"(x = ratio to plain Celery, medians of {result['runs']} runs)")
    for name, values in result.get("idle_ms", {}).items():
        lines.append(f"after a quiet spell, {name}: " + ", ".join(f"{v:.2f}" for v in values)
                     + " ms")
    for goal, ok in result["goals"].items():
        lines.append(f"{'met' if ok else 'NOT met'}: {goal}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
