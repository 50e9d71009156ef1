"""Memory while the CAD is down: worker RSS and Redis bytes per waiting call.

Ours: N calls enqueued while the CAD refuses connections; the breaker opens and every
call waits in Redis (held), so the worker's memory should stay flat. Baseline, in the
same run: plain Celery retrying with ``countdown`` (ETA messages), the usual recipe,
whose waiting retries sit in the worker's memory.

    .venv/bin/python bench/memory.py [--calls 100000] [--baseline-calls 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispatcher.call import Call  # noqa: E402
from dispatcher.cli.embedded import EmbeddedRedis, free_port  # noqa: E402
from dispatcher.producer import Producer  # noqa: E402
from dispatcher.records import Records  # noqa: E402
from dispatcher.settings import Secret, Settings  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        pids += [int(p) for p in children.stdout.split()]
    except FileNotFoundError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def progress(label: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r{label}: {done}/{total}", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)


def ours(calls: int, folder: Path) -> dict[str, Any]:
    server = EmbeddedRedis(folder / "redis-ours", port=free_port()).start()
    dead_port = free_port()  # nothing listens: the CAD refuses every connection
    env = dict(os.environ, REDIS_URL=server.url, SONORAN_COMMUNITY_ID="bench",
               SONORAN_API_KEY="bench-key", SONORAN_API_URL=f"http://127.0.0.1:{dead_port}",
               DISPATCHER_MAX_RATE="0", DISPATCHER_MAX_BACKLOG="0", PYTHONUNBUFFERED="1")
    client = redis.Redis.from_url(server.url)
    procs = [subprocess.Popen([sys.executable, "-m", "dispatcher", name], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True) for name in ("worker", "scheduler")]
    try:
        time.sleep(4)
        # 100,000 calls wait here, twice the default DISPATCHER_MAX_BACKLOG: no cap.
        settings = Settings(redis_url=server.url, community_id="bench",
                            api_key=Secret("bench-key"), max_rate=0, max_backlog=0)
        producer = Producer(settings)
        # Open the breaker first, so the run measures waiting, not the first failures.
        for i in range(10):
            producer.enqueue(Call.create(caller="warm", location="x", description=str(i)))
        records = Records(client)
        deadline = time.time() + 60
        while records.stats()["circuit"] == "closed" and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        worker_before = rss_mb(procs[0].pid)
        redis_before = used_memory(client)
        started = time.time()
        for i in range(calls):
            producer.enqueue(Call.create(caller=f"Caller {i}", location=f"{i} Route 68",
                                         description="Two-car collision", postal="350",
                                         plate="8ABC123"))
            if i % 1000 == 0 or i == calls - 1:
                progress("ours: enqueued", i + 1, calls)
        enqueue_s = time.time() - started
        time.sleep(5)  # let the breaker probe a few times with everything waiting
        stats = records.stats()
        worker_after = rss_mb(procs[0].pid)
        redis_after = used_memory(client)
        producer.close()
        return {
            "calls_waiting": stats["queued"] + stats["scheduled"],
            "circuit": stats["circuit"],
            "worker_rss_mb_before": worker_before,
            "worker_rss_mb_after": worker_after,
            "redis_bytes_per_waiting_call": round((redis_after - redis_before) / calls),
            "enqueue_calls_per_s": round(calls / enqueue_s),
        }
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)
        server.stop()


PLAIN_APP = '''
import requests
from celery import Celery
app = Celery("plain", broker="{broker}")
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, result_backend=None,
                task_ignore_result=True, broker_connection_retry_on_startup=True)

@app.task(bind=True, max_retries=None)
def post(self, body):
    try:
        requests.post("{url}", json=body, timeout=(3, 10))
    except requests.RequestException as exc:
        raise self.retry(exc=exc, countdown=3600)
'''


def baseline(calls: int, folder: Path) -> dict[str, Any]:
    server = EmbeddedRedis(folder / "redis-plain", port=free_port()).start()
    app_dir = folder / "plain"
    app_dir.mkdir()
    (app_dir / "plainapp.py").write_text(PLAIN_APP.format(
        broker=server.url, url=f"http://127.0.0.1:{free_port()}/emergency/call_911"))
    env = dict(os.environ, PYTHONPATH=str(app_dir))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "plainapp", "worker", "--pool", "threads",
         "-c", "8", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        env=env, cwd=app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    client = redis.Redis.from_url(server.url)
    try:
        sys.path.insert(0, str(app_dir))
        import plainapp  # type: ignore[import-not-found]

        time.sleep(4)
        before = rss_mb(worker.pid)
        body = {"caller": "Caller", "location": "Route 68", "description": "Two-car collision",
                "metaData": {"postal": "350", "plate": "8ABC123"}}
        for i in range(calls):
            plainapp.post.apply_async(args=[body])
            if i % 1000 == 0 or i == calls - 1:
                progress("plain celery: enqueued", i + 1, calls)
        # Wait until the worker took every message (each failed once, now an ETA retry).
        deadline = time.time() + 600
        while client.llen("celery") > 0 and time.time() < deadline:
            time.sleep(1)
        time.sleep(5)
        return {
            "calls_waiting": calls,
            "worker_rss_mb_before": before,
            "worker_rss_mb_after": rss_mb(worker.pid),
            "broker_list_left": int(client.llen("celery")),
        }
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--baseline-calls", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        result = {"ours": ours(args.calls, folder),
                  "plain_celery_countdown": baseline(args.baseline_calls, folder)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        o, b = result["ours"], result["plain_celery_countdown"]
        print(f"ours:         {o['calls_waiting']} calls waiting, worker RSS "
              f"{o['worker_rss_mb_before']} -> {o['worker_rss_mb_after']} MiB, Redis "
              f"{o['redis_bytes_per_waiting_call']} B/call, breaker {o['circuit']}")
        print(f"plain Celery: {b['calls_waiting']} calls waiting, worker RSS "
              f"{b['worker_rss_mb_before']} -> {b['worker_rss_mb_after']} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
