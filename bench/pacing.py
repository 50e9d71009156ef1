"""Pacing at the limit: the achieved rate over a minute and the 429s, against plain Celery.

Ours: ``python -m dispatcher worker`` and ``scheduler`` with DISPATCHER_MAX_RATE=R on a
private Redis, and a backlog of calls enqueued at once (more than the minute needs).
Baseline: a bare Celery app whose task only POSTs, with Celery's own
``rate_limit="R/s"`` (``--pool threads -c 8``), the same backlog via ``send_task``.
Each side has its own CAD simulator enforcing that rate as the CAD would:
``set_rate_limit(R * 10, window_s=10)`` (at most 10 R requests in any 10 s).

The achieved rate is measured from the first receipt over ``--duration`` seconds:
(receipts - 1) / (last - first receipt) in the window, i.e. the mean spacing; the
goal (issue 15) is within 1 % of R with zero 429s (issue 6 asked for 5 %). By default
every (rate, side) pair runs at the same time, each with its own Redis, processes and
simulator (they are idle between sends); ``--serial`` runs them one after another.

    .venv/bin/python bench/pacing.py [--rates 1,2] [--duration 60] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    API_KEY,
    COMMUNITY,
    dispatcher_proc,
    emit,
    machine,
    med,
    plain_celery,
    plain_worker,
    private_redis,
    product_env,
    progress,
    rnd,
    seed_call,
    wait_for,
)

from dispatcher import Producer, enqueue_call  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.simulator import CadSimulator  # noqa: E402


class Setup:
    def __init__(self, side: str, rate: float, stack: ExitStack, folder: Path) -> None:
        self.side, self.rate = side, rate
        server = stack.enter_context(private_redis(folder, f"redis-{side}-{rate:g}"))
        self.sim = CadSimulator(community_id=COMMUNITY, api_key=API_KEY).start()
        stack.callback(self.sim.stop)
        if side == "ours":
            env = product_env(server.url, self.sim.url, DISPATCHER_MAX_RATE=f"{rate:g}")
            procs = [dispatcher_proc("worker", env, folder),
                     dispatcher_proc("scheduler", env, folder)]
            producer = Producer(Settings.from_env(env))
            stack.callback(producer.close)

            def send(i: int) -> None:
                enqueue_call(caller=f"Caller {i}", location=f"{i} Route 68",
                             description=f"pacing {i}", postal="350", producer=producer)
        else:
            procs = [plain_worker(folder, server.url, self.sim.url, 8,
                                  rate_limit=f"{rate:g}/s")]
            app = plain_celery(server.url)
            stack.callback(app.close)

            def send(i: int) -> None:
                app.send_task("plain.post", args=[seed_call(i, f"pacing {i}")])
        for p in procs:
            stack.callback(p.stop)
        self.send = send

    def ready(self) -> None:
        """One call through, so the worker is up; then a clean simulator with the limit."""
        self.send(-1)
        wait_for(lambda: len(self.sim.calls()) >= 1, 120, 0.1, f"{self.side} worker")
        time.sleep(2.0)  # the CAD's window forgets the warm-up call's neighbourhood
        self.sim.reset()
        self.sim.set_rate_limit(int(round(self.rate * 10)), window_s=10)

    def backlog(self, duration: float) -> int:
        n = int(self.rate * (duration + 20)) + 10
        for i in range(n):
            self.send(i)
        return n

    def result(self, duration: float, backlog: int) -> dict[str, Any]:
        times = sorted(c["at"] for c in self.sim.calls())
        stats = self.sim.stats()
        first = times[0]
        window = [t for t in times if t <= first + duration]
        span = window[-1] - first
        achieved = (len(window) - 1) / span if span > 0 else float("nan")
        gaps = [b - a for a, b in zip(window, window[1:], strict=False)]
        return {
            "achieved_per_s": rnd(achieved, 4),
            "error_pct": rnd((achieved / self.rate - 1) * 100, 2),
            "delivered_in_window": len(window),
            "min_gap_s": rnd(min(gaps), 4) if gaps else None,
            "max_gap_s": rnd(max(gaps), 4) if gaps else None,
            "gaps_over_1_5x": sum(1 for g in gaps if g > 1.5 / self.rate),
            "requests_429": int(stats["by_status"].get("429", 0)),
            "requests": int(stats["received"]),
            "backlog": backlog,
        }


def one_run(folder: Path, rates: list[float], duration: float, serial: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    groups = ([[(s, r)] for r in rates for s in ("ours", "plain")] if serial
              else [[(s, r) for r in rates for s in ("ours", "plain")]])
    for group in groups:
        with ExitStack() as stack:
            setups = [Setup(s, r, stack, folder) for s, r in group]
            for st in setups:
                st.ready()
            backlogs = [st.backlog(duration) for st in setups]
            progress(f"pacing: {', '.join(f'{s.side}@{s.rate:g}/s' for s in setups)}: "
                     f"waiting {duration:.0f} s")
            time.sleep(duration + 3)
            for st, n in zip(setups, backlogs, strict=True):
                out[f"{st.side}@{st.rate:g}"] = st.result(duration, n)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1,2")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serial", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    folder = Path(tempfile.mkdtemp(prefix="bench-pacing-"))
    runs = []
    try:
        for r in range(args.runs):
            progress(f"pacing: run {r + 1}/{args.runs}")
            runs.append(one_run(folder, rates, args.duration, args.serial))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows: dict[str, Any] = {}
    for key in runs[0]:
        vals = [run[key] for run in runs]
        rows[key] = {k: rnd(med([v[k] for v in vals if v[k] is not None]), 4)
                     for k in vals[0] if k != "requests_429"}
        rows[key]["requests_429_total"] = sum(v["requests_429"] for v in vals)
        rows[key]["per_run_achieved"] = [v["achieved_per_s"] for v in vals]
        rows[key]["per_run_min_gap_s"] = [v["min_gap_s"] for v in vals]
        rows[key]["per_run_429"] = [v["requests_429"] for v in vals]
    goals = {}
    for rate in rates:
        o = rows[f"ours@{rate:g}"]
        goals[f"DISPATCHER_MAX_RATE={rate:g}: achieved within 1 % over {args.duration:g} s"] = \
            abs(o["achieved_per_s"] / rate - 1) <= 0.01
        goals[f"DISPATCHER_MAX_RATE={rate:g}: zero 429s"] = o["requests_429_total"] == 0
    result = {
        "figure": "pacing",
        "command": f"bench/pacing.py --rates {args.rates} --duration {args.duration:g} "
                   f"--runs {args.runs}" + (" --serial" if args.serial else ""),
        "machine": machine(),
        "runs": args.runs,
        "rows": rows,
        "goals": goals,
    }
    emit(result, args.json, render)
    return 0


def render(result: dict[str, Any]) -> str:
    lines = [f"{'side@limit':12} {'achieved/s':>10} {'error %':>8} {'min gap s':>9} "
             f"{'429s':>5}"]
    for key, row in result["rows"].items():
        lines.append(f"{key:12} {row['achieved_per_s']:10.4f} {row['error_pct']:8.2f} "
                     f"{row['min_gap_s']:9.3f} {row['requests_429_total']:5d}")
    for goal, ok in result["goals"].items():
        lines.append(f"{'met' if ok else 'NOT met'}: {goal}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
