"""Run every benchmark with modest defaults and write bench/results.json.

Each figure runs as its own command (``bench/<figure>.py ... --json``), one after the
other, so they never compete for the CPU; each starts its own private Redis. About
8-9 minutes on 2 cores (pacing alone needs its minute). A figure that fails is
recorded with its error and the others still run.

    .venv/bin/python bench/run_all.py [--only enqueue,doors,...] [--quick] [--profile]
                                      [--out bench/results.json]

``--quick`` shrinks every figure (a smoke test, about 3 minutes; pacing over 20 s, which
is not the goal's minute). ``--profile`` also runs bench/profile.py (about 1.5 minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import ROOT, machine  # noqa: E402

#: figure -> (arguments of the default run, arguments of the --quick run)
FIGURES: dict[str, tuple[list[str], list[str]]] = {
    "enqueue": (["--calls", "1000", "--runs", "3"], ["--calls", "300", "--runs", "1"]),
    "doors": (["--rates", "500,1000,2000", "--duration", "2", "--entries", "3000",
               "--runs", "3"],
              ["--rates", "500,2000", "--duration", "1", "--entries", "1000", "--runs", "1"]),
    "latency": (["--calls", "60", "--runs", "3"], ["--calls", "20", "--runs", "1"]),
    "drain": (["--sweep", "0=8 100=8,16,32,64", "--calls", "600", "--seconds", "2",
               "--runs", "3"],
              ["--sweep", "0=8 100=16", "--calls", "200", "--seconds", "1", "--runs", "1"]),
    "pacing": (["--rates", "1,2", "--duration", "60", "--runs", "1"],
               ["--rates", "1,2", "--duration", "20", "--runs", "1"]),
    "memory": (["--calls", "20000", "--baseline-calls", "5000"],
               ["--calls", "2000", "--baseline-calls", "1000"]),
    "dup_window": (["--ambiguous", "300"], ["--ambiguous", "40"]),
    "redis_wait": (["--calls", "2000", "--runs", "3"], ["--calls", "300", "--runs", "1"]),
}


def run(figure: str, args: list[str]) -> dict[str, Any]:
    argv = [sys.executable, str(HERE / f"{figure}.py"), *args, "--json"]
    started = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {figure}: {' '.join(argv[1:])}", file=sys.stderr,
          flush=True)
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    took = round(time.time() - started, 1)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        print(f"  {figure} FAILED after {took}s:\n  " + "\n  ".join(tail), file=sys.stderr)
        return {"error": "\n".join(tail), "seconds": took,
                "command": "bench/" + " ".join(argv[1:-1]).split("bench/", 1)[-1]}
    result = json.loads(proc.stdout)
    result["seconds"] = took
    result.setdefault("command", f"bench/{figure}.py " + " ".join(args))
    result.pop("machine", None)
    print(f"  {figure}: {took}s", file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(FIGURES))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    started = time.time()
    results: dict[str, Any] = {"machine": machine(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "quick": args.quick, "figures": {}}
    for figure in args.only.split(","):
        full, quick = FIGURES[figure]
        results["figures"][figure] = run(figure, quick if args.quick else full)
    if args.profile:
        results["figures"]["profile"] = run("profile", ["--calls", "2000"])
    results["total_seconds"] = round(time.time() - started, 1)
    results["loadavg_at_end"] = __import__("os").getloadavg()[0]
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    goals = [(f, g, ok) for f, r in results["figures"].items()
             for g, ok in r.get("goals", {}).items()]
    for figure, goal, ok in goals:
        print(f"{'met    ' if ok else 'NOT met'}  {figure}: {goal}")
    failed = [f for f, r in results["figures"].items() if "error" in r]
    print(f"wrote {args.out} in {results['total_seconds']:.0f}s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
