"""What DISPATCHER_REDIS_WAIT costs an enqueue: WAIT 0 and WAIT 1 side by side, one run.

A private master and one replica (two redis-servers on loopback, append-only files on,
as the product wants). One thread, closed loop, each call timed on its own. Rows, in
turn, one batch each round so that all see the same noise:

- ``enqueue_call, WAIT 0`` / ``WAIT 1``: the public function (validation, the record's
  Lua script, the first Celery message); WAIT 1 adds a PUBLISH and ``WAIT 1 1000`` on the
  same connection, in the same round trip, and the pipeline's script check.
- ``enqueue_many, WAIT 0`` / ``WAIT 1`` (per call): the inbox bridge's batches, one WAIT
  per batch.

Redis is flushed between batches (untimed), so every call takes the publish path. On
loopback the replica is microseconds away: across a network add one round trip to the
replica (the WAIT waits for its acknowledgement).

    .venv/bin/python bench/redis_wait.py [--calls 2000] [--batch 200] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from common import (  # common puts the project on sys.path
    emit,
    machine,
    median_of_runs,
    percentile,
    private_redis,
    product_env,
    progress,
    ratio,
    rnd,
    wait_for,
)

from dispatcher import Producer, enqueue_call  # noqa: E402
from dispatcher.call import Call  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402

ROWS = ["enqueue_call, WAIT 0", "enqueue_call, WAIT 1",
        "enqueue_many, WAIT 0 (per call)", "enqueue_many, WAIT 1 (per call)"]


def _kwargs(i: int) -> dict[str, Any]:
    return {"caller": f"Caller {i}", "location": f"{i} Route 68 / Joshua Rd",
            "description": "Two-car collision", "postal": "350", "plate": "8ABC123"}


def replicate(master: Any, replica: Any) -> None:
    """Make ``replica`` a replica of ``master`` and wait until it is in sync."""
    redis.Redis(port=master.port).config_set("repl-diskless-sync-delay", 0)
    redis.Redis(port=replica.port).replicaof("127.0.0.1", master.port)

    def online() -> bool:
        info = redis.Redis(port=master.port).info("replication")
        return bool(info.get("slave0", {}).get("state") == "online")

    wait_for(online, 30, 0.05, "the replica to sync")


def one_run(url: str, n: int, batch: int, rotate: int) -> dict[str, Any]:
    producers = {w: Producer(Settings.from_env(product_env(
        url, DISPATCHER_MAX_RATE="0", DISPATCHER_REDIS_WAIT=str(w)))) for w in (0, 1)}
    client = redis.Redis.from_url(url)

    def single(w: int) -> Callable[[int], Any]:
        return lambda i: enqueue_call(producer=producers[w], **_kwargs(i))

    lat: dict[str, list[float]] = {name: [] for name in ROWS}
    busy: dict[str, float] = dict.fromkeys(ROWS, 0.0)
    try:
        for w in (0, 1):  # warm connections and the script cache
            for i in range(50):
                single(w)(i)
        done = rnd_no = 0
        while done < n:
            size = min(batch, n - done)
            k = (rotate + rnd_no) % len(ROWS)
            rnd_no += 1
            for name in ROWS[k:] + ROWS[:k]:
                client.flushdb()
                w = 1 if "WAIT 1" in name else 0
                if name.startswith("enqueue_many"):
                    calls = [Call.create(**_kwargs(i)) for i in range(done, done + size)]
                    t0 = time.perf_counter()
                    producers[w].enqueue_many(calls)
                    dt = time.perf_counter() - t0
                    busy[name] += dt
                    lat[name] += [dt / size] * size
                    continue
                fn = single(w)
                t_batch = time.perf_counter()
                for i in range(done, done + size):
                    t0 = time.perf_counter()
                    fn(i)
                    lat[name].append(time.perf_counter() - t0)
                busy[name] += time.perf_counter() - t_batch
            done += size
            progress(f"redis_wait: {done}/{n} calls per row")
    finally:
        for p in producers.values():
            p.close()
        client.close()
    return {name: {"p50_ms": rnd(percentile(lat[name], 50) * 1000, 4),
                   "p99_ms": rnd(percentile(lat[name], 99) * 1000, 4),
                   "mean_ms": rnd(sum(lat[name]) / len(lat[name]) * 1000, 4),
                   "calls_per_s": round(len(lat[name]) / busy[name])} for name in ROWS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per row and run")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-wait-"))
    runs = []
    try:
        with private_redis(folder, "master") as master, \
                private_redis(folder, "replica") as replica:
            replicate(master, replica)
            for r in range(args.runs):
                progress(f"redis_wait: run {r + 1}/{args.runs}")
                runs.append(one_run(master.url, args.calls, args.batch, r))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = median_of_runs(runs)
    for a, b in (("enqueue_call, WAIT 0", "enqueue_call, WAIT 1"),
                 ("enqueue_many, WAIT 0 (per call)", "enqueue_many, WAIT 1 (per call)")):
        rows[b]["p50_vs_wait0"] = ratio(rows[b]["p50_ms"], rows[a]["p50_ms"])
        rows[b]["p50_added_ms"] = rnd(rows[b]["p50_ms"] - rows[a]["p50_ms"], 4)
    result = {
        "figure": "redis_wait",
        "command": f"bench/redis_wait.py --calls {args.calls} --batch {args.batch} "
                   f"--runs {args.runs}",
        "machine": machine(),
        "runs": args.runs,
        "rows": rows,
        "per_run_p50_ms": {name: [r[name]["p50_ms"] for r in runs] for name in ROWS},
    }
    emit(result, args.json, render)
    return 0


def render(result: dict[str, Any]) -> str:
    lines = [f"{'':34} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'calls/s':>8} {'p50 x':>6}"]
    for name, row in result["rows"].items():
        x = row.get("p50_vs_wait0")
        lines.append(f"{name:34} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} "
                     f"{row['mean_ms']:8.3f} {row['calls_per_s']:8.0f} "
                     f"{'' if x is None else f'{x:6.2f}'}")
    lines.append(f"(x = ratio to the same row with WAIT 0; medians of {result['runs']} runs; "
                 "master and replica on loopback)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
