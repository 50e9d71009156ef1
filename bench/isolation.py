"""Isolation of communities: one community's latency alone, and beside another community
whose CAD is down with a backlog, side by side in one run.

One deployment (a worker and a scheduler on a private Redis) serves two communities from
a DISPATCHER_COMMUNITIES file, each with its own CAD simulator (0 ms, no rate limit):

- ``alone``: community ``a`` sends calls one at a time, ``--interval-ms`` apart, while
  community ``b`` has nothing waiting;
- ``beside b down + backlog``: ``b``'s CAD answers 503 to everything and ``b`` has
  ``--backlog`` calls waiting (its breaker open, its calls on backoff), while ``a``
  sends the same way.

Latency is enqueue to the CAD's receipt (same clock). The two sides alternate in every
run; the figures are medians of the runs.

    .venv/bin/python bench/isolation.py [--calls 100] [--backlog 10000] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    emit,
    enqueue_seed,
    machine,
    median_of_runs,
    private_redis,
    product_env,
    progress,
    ratio,
    wait_for,
)
from latency import measure

from dispatcher import Producer  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.simulator import CadSimulator  # noqa: E402

KEY_A, KEY_B = "bench-key-community-a-01", "bench-key-community-b-02"
SIDES = ["alone", "beside b down + backlog"]


def _file(folder: Path, a: CadSimulator, b: CadSimulator) -> Path:
    path = folder / "communities.toml"
    path.write_text(f"""
[communities.a]
id = "community-a"
key = "{KEY_A}"
api_url = "{a.url}"
max_rate = 0
default = true

[communities.b]
id = "community-b"
key = "{KEY_B}"
api_url = "{b.url}"
max_rate = 0
""")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calls of a per side and run")
    parser.add_argument("--interval-ms", type=float, default=50.0)
    parser.add_argument("--backlog", type=int, default=10_000, help="calls waiting in b")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    sim_a = CadSimulator(community_id="community-a", api_key=KEY_A).start()
    sim_b = CadSimulator(community_id="community-b", api_key=KEY_B).start()
    procs = []
    runs: list[dict[str, Any]] = []
    backlog_waiting: list[int] = []
    try:
        with private_redis(folder) as server:
            env = product_env(server.url, DISPATCHER_COMMUNITIES=str(_file(folder, sim_a, sim_b)),
                              DISPATCHER_MAX_BACKLOG="0")
            for name in ("SONORAN_COMMUNITY_ID", "SONORAN_API_KEY"):
                env.pop(name)
            from common import dispatcher_proc

            procs += [dispatcher_proc("worker", env, folder),
                      dispatcher_proc("scheduler", env, folder)]
            base = Producer(Settings.from_env(env))
            a, b = base.of("a"), base.of("b")
            interval = args.interval_ms / 1000

            def send_a(i: int, desc: str) -> None:
                enqueue_seed(a, i, desc)

            progress("isolation: waiting for the worker")
            measure(sim_a, "warm", send_a, 10, interval)
            for r in range(args.runs):
                run: dict[str, Any] = {}
                for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                    progress(f"isolation: run {r + 1}/{args.runs}: {side}")
                    if side == SIDES[1]:
                        sim_b.set_fault("error", status=503)
                        started = time.time()
                        for i in range(args.backlog):
                            enqueue_seed(b, i, f"backlog {r} {i}")
                        progress(f"isolation: {args.backlog} calls of b waiting "
                                 f"({time.time() - started:.1f}s to enqueue)")
                    run[side] = measure(sim_a, f"r{r}-{side.split()[0]}", send_a, args.calls,
                                        interval)
                    if side == SIDES[1]:
                        waiting = b.lifecycle.client.zcard("dispatcher@b:pending")
                        backlog_waiting.append(int(waiting))
                        sim_b.clear_faults()  # b drains before the next "alone" side
                        wait_for(lambda: b.lifecycle.client.zcard("dispatcher@b:pending") == 0,
                                 600, 0.5, "b's backlog to drain")
                runs.append(run)
            base.close()
    finally:
        for p in procs:
            p.stop()
        sim_a.stop()
        sim_b.stop()
        if not getattr(main, "keep", False):
            shutil.rmtree(folder, ignore_errors=True)
    rows = median_of_runs(runs)
    alone = rows["alone"]
    for side in SIDES:
        rows[side]["p50_vs_alone"] = ratio(rows[side]["p50_ms"], alone["p50_ms"])
        rows[side]["p99_vs_alone"] = ratio(rows[side]["p99_ms"], alone["p99_ms"])
    result = {
        "figure": "isolation",
        "command": f"bench/isolation.py --calls {args.calls} --interval-ms "
                   f"{args.interval_ms:g} --backlog {args.backlog} --runs {args.runs}",
        "machine": machine(),
        "runs": args.runs,
        "rows": rows,
        "b_waiting_while_measured": backlog_waiting,
        "per_run_p50_ms": {side: [r[side]["p50_ms"] for r in runs] for side in SIDES},
    }
    emit(result, args.json, render)
    return 0


def render(result: dict[str, Any]) -> str:
    lines = [f"{'a: enqueue -> CAD receipt':28} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>6} "
             f"{'p99 x':>6}"]
    for name, row in result["rows"].items():
        lines.append(f"{name:28} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
                     f"{row['p50_vs_alone']:6.2f} {row['p99_vs_alone']:6.2f}")
    lines.append(f"(x = ratio to a alone, medians of {result['runs']} runs; b's calls waiting "
                 f"while a was measured: {result['b_waiting_while_measured']})")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
