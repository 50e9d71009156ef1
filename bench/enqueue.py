"""Enqueue cost from one process: `enqueue_call` vs bare Celery `send_task` vs bare LPUSH.

All on one private Redis, one after the other in every run, one thread, closed loop
(each call timed on its own with perf_counter). Rows:

- ``enqueue_call``: the public function (validation, idempotency/record Lua script, the
  Celery message when the system is idle). Measured on the *publish path*: Redis is
  flushed every ``--batch`` calls (untimed) so that no backlog builds up without a
  worker and every call is published, as when the system is idle.
- ``Producer.enqueue``: the same with a pre-validated Call (no Call.create).
- ``enqueue_call (held)``: with a backlog already waiting, the call is recorded and held
  (no Celery message), as during an outage or at the rate limit.
- ``enqueue_many``: the bulk form, per call (batches of ``--batch``).
- baselines: bare Celery ``app.send_task`` of a similar payload (a bare Celery app on the
  same Redis) and bare redis-py ``LPUSH`` of the same payload as JSON.

    .venv/bin/python bench/enqueue.py [--calls 2000] [--batch 200] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (  # common puts the project on sys.path
    client_for,
    emit,
    machine,
    median_of_runs,
    percentile,
    plain_celery,
    private_redis,
    product_env,
    progress,
    ratio,
    rnd,
)

from dispatcher import Producer, enqueue_call  # noqa: E402
from dispatcher.call import Call  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402

ROWS = ["enqueue_call", "Producer.enqueue", "enqueue_call (held)", "enqueue_many (per call)",
        "celery send_task", "redis LPUSH"]


def _kwargs(i: int) -> dict[str, Any]:
    return {"caller": f"Caller {i}", "location": f"{i} Route 68 / Joshua Rd",
            "description": "Two-car collision", "postal": "350", "plate": "8ABC123"}


def _payload(i: int) -> dict[str, Any]:
    """About what our message carries: the call plus an id and an enqueue time."""
    return {"id": f"01J{i:023d}", "caller": f"Caller {i}", "location": f"{i} Route 68 / Joshua Rd",
            "description": "Two-car collision", "isEmergency": True, "serverId": None,
            "metaData": {"postal": "350", "plate": "8ABC123"}, "enqueued_at": time.time(),
            "idempotency_key": None, "v": 1}


def _summary(lat: list[float], busy: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"p50_ms": rnd(percentile(lat, 50) * 1000, 4),
           "p99_ms": rnd(percentile(lat, 99) * 1000, 4),
           "mean_ms": rnd(sum(lat) / len(lat) * 1000, 4),
           "calls_per_s": round(len(lat) / busy)}
    out.update(extra or {})
    return out


def one_run(server: Any, n: int, batch: int, rotate: int) -> dict[str, Any]:
    """Every row in turn, one batch each, round after round (so all see the same noise)."""
    client = client_for(server)
    settings = Settings.from_env(product_env(server.url, DISPATCHER_MAX_RATE="0"))
    queue = settings.queue_name
    producer = Producer(settings)
    celery_app = plain_celery(server.url)

    def reset() -> None:
        # Everything but kombu's exchange bindings (Celery declares them once per
        # connection): a fresh, idle system without re-declaring queues.
        keys = [k for k in client.scan_iter(count=1000) if not k.startswith(b"_kombu.")]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])

    def backlog() -> None:
        reset()
        for i in range(300):  # more than the window of messages out at once: a backlog
            enqueue_call(producer=producer, **_kwargs(i))

    prebuilt = Call.create(**_kwargs(0))
    single: dict[str, tuple[Callable[[], None], Callable[[int], Any]]] = {
        "enqueue_call": (reset, lambda i: enqueue_call(producer=producer, **_kwargs(i))),
        "Producer.enqueue": (reset, lambda i: producer.enqueue(prebuilt)),
        "enqueue_call (held)": (backlog, lambda i: enqueue_call(producer=producer,
                                                                **_kwargs(i))),
        "celery send_task": (reset, lambda i: celery_app.send_task("plain.noop",
                                                                  args=[_payload(i)])),
        "redis LPUSH": (reset, lambda i: client.lpush("bench:plain", json.dumps(_payload(i)))),
    }
    lat: dict[str, list[float]] = {name: [] for name in ROWS}
    busy: dict[str, float] = dict.fromkeys(ROWS, 0.0)
    published: dict[str, int] = dict.fromkeys(ROWS, 0)
    try:
        # Warm every path (connections, script cache, Celery's producer pool).
        reset()
        for i in range(50):
            enqueue_call(producer=producer, **_kwargs(i))
            celery_app.send_task("plain.noop", args=[_payload(i)])
            client.lpush("bench:plain", json.dumps(_payload(i)))
        done = 0
        rnd_no = 0
        while done < n:
            size = min(batch, n - done)
            k = (rotate + rnd_no) % len(ROWS)
            order = ROWS[k:] + ROWS[:k]
            rnd_no += 1
            for name in order:
                if name == "enqueue_many (per call)":
                    reset()
                    calls = [Call.create(**_kwargs(i)) for i in range(done, done + size)]
                    t0 = time.perf_counter()
                    producer.enqueue_many(calls)
                    dt = time.perf_counter() - t0
                    busy[name] += dt
                    lat[name] += [dt / size] * size
                    published[name] += int(client.llen(queue))
                    continue
                setup, fn = single[name]
                setup()
                before = int(client.llen(queue))
                t_batch = time.perf_counter()
                for i in range(done, done + size):
                    t0 = time.perf_counter()
                    fn(i)
                    lat[name].append(time.perf_counter() - t0)
                busy[name] += time.perf_counter() - t_batch
                published[name] += int(client.llen(queue)) - before
            done += size
            progress(f"enqueue: {done}/{n} calls per row")
    finally:
        producer.close()
        celery_app.close()
        client.close()
    rows = {}
    for name in ROWS:
        extra: dict[str, Any] = {}
        if name not in ("celery send_task", "redis LPUSH"):
            extra["published_fraction"] = round(published[name] / n, 3)
        if name == "enqueue_many (per call)":
            extra["note"] = "p50/p99 are per-call averages of each batch"
        rows[name] = _summary(lat[name], busy[name], extra)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per row and run")
    parser.add_argument("--batch", type=int, default=200,
                        help="calls between flushes (below the window of messages out)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-enqueue-"))
    runs = []
    try:
        with private_redis(folder) as server:
            for r in range(args.runs):
                progress(f"enqueue: run {r + 1}/{args.runs}")
                runs.append(one_run(server, args.calls, args.batch, r))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = median_of_runs(runs)
    base = rows["celery send_task"]
    for name in ROWS:
        rows[name]["p50_vs_send_task"] = ratio(rows[name]["p50_ms"], base["p50_ms"])
        rows[name]["throughput_vs_send_task"] = ratio(rows[name]["calls_per_s"],
                                                      base["calls_per_s"])
    ours = rows["enqueue_call"]
    result = {
        "figure": "enqueue",
        "command": f"bench/enqueue.py --calls {args.calls} --batch {args.batch} "
                   f"--runs {args.runs}",
        "machine": machine(),
        "runs": args.runs,
        "rows": rows,
        "per_run_p50_ms": {name: [r[name]["p50_ms"] for r in runs] for name in ROWS},
        "goals": {
            "enqueue_call at least as fast as send_task (p50)":
                ours["p50_ms"] <= base["p50_ms"],
            "enqueue_call p99 <= 1 ms": ours["p99_ms"] <= 1.0,
            "enqueue_many faster per call than Producer.enqueue (both pre-validated)":
                rows["enqueue_many (per call)"]["mean_ms"] < rows["Producer.enqueue"]["mean_ms"],
        },
    }
    emit(result, args.json, render)
    return 0


def render(result: dict[str, Any]) -> str:
    lines = [f"{'':26} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>8} {'p50 x':>6} {'rate x':>7}"]
    for name, row in result["rows"].items():
        lines.append(f"{name:26} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} "
                     f"{row['calls_per_s']:8.0f} {row['p50_vs_send_task']:6.2f} "
                     f"{row['throughput_vs_send_task']:7.2f}")
    lines.append("(x = ratio to bare Celery send_task, medians of "
                 f"{result['runs']} runs)")
    for goal, ok in result["goals"].items():
        lines.append(f"{'met' if ok else 'NOT met'}: {goal}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
