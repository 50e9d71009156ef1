"""The one duplicate window: from the CAD accepting a call to our record of it.

A worker killed inside this window leaves a call the CAD has but we do not know it
has; after its lease the call is sent again. This measures the window's length per
call: the simulator's arrival time of the request (the CAD commits on arrival) to
the ``delivered_at`` our worker wrote (taken just before the one Redis script that
records it, so add one Redis round trip, well under a millisecond here).

    .venv/bin/python bench/dup_window.py [--calls 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispatcher.call import Call  # noqa: E402
from dispatcher.cli.embedded import EmbeddedRedis, free_port  # noqa: E402
from dispatcher.producer import Producer  # noqa: E402
from dispatcher.records import Records  # noqa: E402
from dispatcher.settings import Secret, Settings  # noqa: E402
from dispatcher.simulator import CadSimulator  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-dupwin-"))
    server = EmbeddedRedis(folder / "redis", port=free_port()).start()
    sim = CadSimulator(community_id="bench", api_key="bench-key").start()
    env = dict(os.environ, REDIS_URL=server.url, SONORAN_COMMUNITY_ID="bench",
               SONORAN_API_KEY="bench-key", SONORAN_API_URL=sim.url, DISPATCHER_MAX_RATE="0")
    procs = [subprocess.Popen([sys.executable, "-m", "dispatcher", name], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True) for name in ("worker", "scheduler")]
    try:
        settings = Settings(redis_url=server.url, community_id="bench",
                            api_key=Secret("bench-key"), max_rate=0)
        producer = Producer(settings)
        ids = {}
        for i in range(args.calls):
            ids[f"Caller {i}"] = producer.enqueue(
                Call.create(caller=f"Caller {i}", location="Route 68", description="Crash"))
        deadline = time.time() + 300
        while len(sim.calls()) < args.calls and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        records = Records(redis.Redis.from_url(server.url))
        windows = []
        for c in sim.calls():
            record = records.get(ids[c["call"]["caller"]])
            if record and record.delivered_at:
                windows.append((record.delivered_at - c["at"]) * 1000)
        windows.sort()
        result = {
            "calls": len(windows),
            "window_ms_p50": round(statistics.median(windows), 2),
            "window_ms_p99": round(windows[int(len(windows) * 0.99) - 1], 2),
            "window_ms_max": round(windows[-1], 2),
        }
        producer.close()
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)
        sim.stop()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"duplicate window over {result['calls']} calls: p50 {result['window_ms_p50']} ms, "
              f"p99 {result['window_ms_p99']} ms, max {result['window_ms_max']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
