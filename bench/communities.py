"""Many communities in one deployment: throughput, pacing and 429s against the number of
communities, each at its own limit, and what a community costs in Redis and the scheduler.

For each N in ``--communities`` (a fresh private Redis and fresh processes each time):
one CAD simulator serving N communities (``add_community``), answering in
``--latency-ms`` and limiting each community's key as the CAD would
(``set_rate_limit(10 R, window_s=10)``: at most 10 R requests in any 10 s); a
DISPATCHER_COMMUNITIES file of N communities at ``max_rate = R``; a backlog per
community larger than the window needs, enqueued before the worker and scheduler start;
then ``--workers`` worker processes (``-c --concurrency`` threads each) and one
scheduler. After ``--warmup`` seconds, over ``--duration`` seconds:

- throughput: every call the CAD accepted in the window, per second (the goal at N
  communities of rate R is N x R);
- each community's pace: (receipts - 1) / (last - first receipt) in the window, and the
  worst ratio to R over the communities (within 5 % below R, never above);
- 429s from the CAD (the goal: 0), and calls created twice (0);
- CPU of the workers, the scheduler and Redis, per delivered call;
- Redis: bytes per waiting call (used_memory before and after the backlog) and bytes
  per community of its own state (the sum of MEMORY USAGE of a community's keys that
  are not a call's, after the run);
- the CAD simulator's CPU (this process's, while it only serves the CAD), for it shares
  the machine;
- the scheduler's CPU per second while every community is idle (after the backlog
  drained), to show its tick grows with the communities that have calls waiting.

    .venv/bin/python bench/communities.py [--communities 1,50,100,200] [--rate 1]
        [--latency-ms 100] [--duration 30] [--workers 1] [--concurrency 32] [--json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    dispatcher_proc,
    emit,
    machine,
    private_redis,
    product_env,
    progress,
    redis_cpu,
    rnd,
    seed_call,
    wait_for,
)

from dispatcher import Producer  # noqa: E402
from dispatcher.call import Call  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.simulator import CadSimulator  # noqa: E402

#: Keys of a community that belong to one call, not to the community.
PER_CALL = (":call:", ":idem:", ":ticket:", ":cad:")


def _name(i: int) -> str:
    return f"c{i:03d}"


def _key(i: int) -> str:
    return f"bench-key-{i:03d}-0123456789"


def _file(folder: Path, n: int, url: str, rate: float) -> Path:
    path = folder / "communities.toml"
    parts = []
    for i in range(n):
        parts.append(f'[communities.{_name(i)}]\nid = "community-{i:03d}"\n'
                     f'key = "{_key(i)}"\napi_url = "{url}"\nmax_rate = {rate:g}\n'
                     + ("default = true\n" if i == 0 else ""))
    path.write_text("\n".join(parts))
    return path


def _community_bytes(client: Any, name: str) -> int:
    """MEMORY USAGE of a community's own keys (not its calls')."""
    total = 0
    for key in client.scan_iter(match=f"dispatcher@{name}:*", count=1000):
        text = key.decode()
        if any(part in text for part in PER_CALL):
            continue
        total += int(client.memory_usage(key) or 0)
    return total


def one(n: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    rate = args.rate
    # Enough to keep every community busy through the window, and little more.
    per_community = int(rate * (args.warmup + args.duration) + 3)
    sim = CadSimulator(community_id="unused", api_key="unused-key",
                       latency_ms=args.latency_ms).start()
    for i in range(n):
        sim.add_community(f"community-{i:03d}", _key(i))
    sim.set_rate_limit(int(round(rate * 10)), window_s=10)
    procs = []
    try:
        with private_redis(folder, f"redis-{n}") as server:
            env = product_env(server.url, DISPATCHER_COMMUNITIES=str(_file(folder, n, sim.url,
                                                                           rate)),
                              DISPATCHER_MAX_BACKLOG="0")
            for name in ("SONORAN_COMMUNITY_ID", "SONORAN_API_KEY"):
                env.pop(name)
            base = Producer(Settings.from_env(env))
            client = base.lifecycle.client
            before = int(client.info("memory")["used_memory"])
            started = time.time()
            for i in range(n):
                producer = base.of(_name(i))
                producer.enqueue_many([Call.parse(seed_call(j, f"{_name(i)} {j}"))
                                       for j in range(per_community)])
                if i % 20 == 19:
                    progress(f"communities {n}: backlog of {i + 1}/{n} enqueued")
            enqueue_s = time.time() - started
            waiting = n * per_community
            per_call_bytes = (int(client.info("memory")["used_memory"]) - before) / waiting
            progress(f"communities {n}: {waiting} calls waiting ({enqueue_s:.1f}s); "
                     f"starting {args.workers} worker(s) and the scheduler")
            workers = [dispatcher_proc("worker", env, folder, "--concurrency",
                                       str(args.concurrency))
                       for _ in range(args.workers)]
            scheduler = dispatcher_proc("scheduler", env, folder)
            procs += [*workers, scheduler]
            wait_for(lambda: sim.stats()["received"] > 0, 60, 0.1, "the first send")
            time.sleep(args.warmup)
            cpu0 = ([w.cpu() for w in workers], scheduler.cpu(), redis_cpu(server))
            busy0 = _machine_busy()
            sim0 = time.process_time()  # this process: the simulator's threads, mostly
            t0 = time.time()
            progress(f"communities {n}: measuring {args.duration:g}s")
            time.sleep(args.duration)
            t1 = time.time()
            cpu1 = ([w.cpu() for w in workers], scheduler.cpu(), redis_cpu(server))
            busy1 = _machine_busy()
            sim1 = time.process_time()
            received = [r for r in sim.received() if t0 <= r["at"] < t1]
            ok = [r for r in received if r["status"] == 200]
            too_many = sum(1 for r in received if r["status"] == 429)
            paces: dict[str, float] = {}
            for i in range(n):
                times = sorted(r["at"] for r in ok if r.get("community") == f"community-{i:03d}")
                if len(times) >= 2:
                    paces[_name(i)] = (len(times) - 1) / (times[-1] - times[0])
            ratios = sorted(p / rate for p in paces.values())
            delivered = len(ok)
            worker_cpu = sum(cpu1[0]) - sum(cpu0[0])
            # The rest drains; then the scheduler's share with nothing waiting.
            progress(f"communities {n}: draining the rest")
            pending = [f"dispatcher@{_name(i)}:pending" for i in range(n)]
            wait_for(lambda: not any(client.exists(k) for k in pending), 120, 0.5,
                     "the backlog to drain")
            base.close()
            idle_cpu_s = _idle_scheduler(scheduler, args.idle)
            community_bytes = [_community_bytes(client, _name(i)) for i in range(min(n, 20))]
            duplicates = sim.stats()["duplicates"]
            return {
                "communities": n,
                "goal_per_s": n * rate,
                "throughput_per_s": rnd(delivered / (t1 - t0), 1),
                "throughput_vs_goal": rnd(delivered / (t1 - t0) / (n * rate), 3),
                "pace_vs_limit": {
                    "min": rnd(ratios[0], 3) if ratios else None,
                    "median": rnd(ratios[len(ratios) // 2], 3) if ratios else None,
                    "max": rnd(ratios[-1], 3) if ratios else None,
                    "paced": len(ratios),
                },
                "http_429": too_many,
                "duplicates": duplicates,
                "cpu_ms_per_call": {
                    "workers": rnd(1000 * worker_cpu / max(1, delivered), 2),
                    "scheduler": rnd(1000 * (cpu1[1] - cpu0[1]) / max(1, delivered), 2),
                    "redis": rnd(1000 * (cpu1[2] - cpu0[2]) / max(1, delivered), 2),
                },
                "machine_cpu_busy_pct": rnd(100 * (busy1[0] - busy0[0]) / max(1, busy1[1]
                                                                           - busy0[1]), 1),
                "simulator_cpu_pct": rnd(100 * (sim1 - sim0) / (t1 - t0), 1),
                "scheduler_cpu_busy_pct": rnd(100 * (cpu1[1] - cpu0[1]) / (t1 - t0), 1),
                "scheduler_cpu_idle_pct": rnd(100 * idle_cpu_s, 1),
                "redis_bytes_per_waiting_call": int(per_call_bytes),
                "redis_bytes_per_community": int(sorted(community_bytes)[len(community_bytes)
                                                                          // 2]),
                "enqueue_s": rnd(enqueue_s, 1),
            }
    finally:
        for p in procs:
            p.stop()
        sim.stop()


def _machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _idle_scheduler(scheduler: Any, seconds: float) -> float:
    """The scheduler's CPU share (0..1) over ``seconds`` with nothing to send."""
    c0, t0 = scheduler.cpu(), time.time()
    time.sleep(seconds)
    return (scheduler.cpu() - c0) / (time.time() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--communities", default="1,50,100,200")
    parser.add_argument("--rate", type=float, default=1.0, help="each community's max_rate")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--idle", type=float, default=10.0,
                        help="seconds the idle scheduler is measured")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-communities-"))
    keep = False
    rows = []
    try:
        for n in [int(x) for x in args.communities.split(",")]:
            rows.append(one(n, args, folder))
            progress(f"communities {n}: {rows[-1]['throughput_per_s']}/s")
    except BaseException:
        keep = True
        print(f"kept the logs in {folder}", flush=True)
        raise
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    result = {
        "figure": "communities",
        "command": f"bench/communities.py --communities {args.communities} --rate "
                   f"{args.rate:g} --latency-ms {args.latency_ms:g} --duration "
                   f"{args.duration:g} --workers {args.workers} --concurrency "
                   f"{args.concurrency}",
        "machine": machine(),
        "rows": rows,
    }
    emit(result, args.json, render)
    return 0


def render(result: dict[str, Any]) -> str:
    """The table bench/report.py puts in docs/PERFORMANCE.md (pace = each community's
    rate over its limit)."""
    from report import communities

    return "\n".join(communities(result))


if __name__ == "__main__":
    raise SystemExit(main())
