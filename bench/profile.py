"""Profiles of the hot paths with py-spy: the worker during a drain (and the plain Celery
worker over the same drain, to compare), the producer during enqueue, the web process
under load, the bridge moving a backlog.

py-spy samples the real processes (``py-spy record --format raw``). Raw stacks are kept
in bench/profiles/ (feed them to flamegraph.pl or speedscope); the summary lists the top
functions by self time, by inclusive time within our code, and self time by package. The
worker, web and bridge are sampled with ``--gil`` (only the thread holding the GIL: where Python CPU
goes); the single-threaded producer without it (wall time, so the wait for Redis's
answer shows as socket reads). Imports are left out of the summaries.

Needs py-spy (``.venv/bin/pip install py-spy``); CAP_SYS_PTRACE to attach to a pid
(root in a container usually has it).

    .venv/bin/python bench/profile.py [--only worker,plain,producer,web,bridge] [--calls 3000]
                                      [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    API_KEY,
    COMMUNITY,
    ROOT,
    client_for,
    dispatcher_proc,
    emit,
    enqueue_seed,
    private_redis,
    product_env,
    progress,
    wait_for,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "profiles"
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    for candidate in (Path(sys.executable).parent / "py-spy", shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")


def attach(pid: int, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Sample only threads holding the GIL: Python CPU, not threads waiting on sockets."""
    return subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--rate", str(rate),
                             "--gil", "--format", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def detach(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()


def _package(file: str) -> str:
    if file.startswith(("dispatcher/", "workers/")):
        return file.split("/")[0] + "/" + file.split("/")[1].removesuffix(".py")
    if file.startswith("<"):
        return "importlib/frozen"
    first = file.split("/")[0].removesuffix(".py")
    return first


def summarise(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self time per function, inclusive time per function of ours, self time per package."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkg: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = []
        for part in stack.split(";"):
            m = FRAME.match(part)
            frames.append((m.group("func"), m.group("file")) if m else (part, "?"))
        if not frames or any(f[0] == "_find_and_load" for f in frames):
            continue  # imports are start-up cost, not the hot path
        total += count
        func, file = frames[-1]
        self_t[f"{func} ({file})"] += count
        pkg[_package(file)] += count
        seen = set()
        for func, file in frames:
            if file.startswith(("dispatcher/", "workers/", "bench/", "plainapp")):
                key = f"{func} ({file})"
                if key not in seen:
                    seen.add(key)
                    incl[key] += count

    def pct(counter: Counter[str], n: int) -> list[list[Any]]:
        return [[k, round(v * 100 / max(total, 1), 1)] for k, v in counter.most_common(n)]

    return {"samples": total, "self_pct": pct(self_t, top),
            "ours_inclusive_pct": pct(incl, top), "self_pct_by_package": pct(pkg, 15)}


def profile_worker(folder: Path, calls: int, latency_ms: float, concurrency: int) -> Path:
    from dispatcher import Producer
    from dispatcher.settings import Settings
    from dispatcher.simulator import CadSimulator

    out = OUT / f"worker-drain-{latency_ms:g}ms-c{concurrency}.raw"
    with ExitStack() as stack:
        server = stack.enter_context(private_redis(folder))
        sim = CadSimulator(community_id=COMMUNITY, api_key=API_KEY,
                           latency_ms=latency_ms).start()
        stack.callback(sim.stop)
        env = product_env(server.url, sim.url, DISPATCHER_MAX_RATE="0",
                          DISPATCHER_CONCURRENCY=concurrency)
        worker = dispatcher_proc("worker", env, folder)
        scheduler = dispatcher_proc("scheduler", env, folder)
        stack.callback(scheduler.stop)
        stack.callback(worker.stop)
        producer = Producer(Settings.from_env(env))
        stack.callback(producer.close)

        def send(i: int) -> None:
            enqueue_seed(producer, i)

        for i in range(2 * concurrency):
            send(i)
        wait_for(lambda: len(sim.calls()) >= 2 * concurrency, 120, 0.1, "the worker")
        sim.reset()
        spy = attach(worker.pid, out)
        time.sleep(1.0)  # py-spy attached (idle threads are not sampled)
        for i in range(calls):
            send(i)
        wait_for(lambda: len(sim.calls()) >= calls, 600, 0.3, "the drain")
        detach(spy)
    return out


def profile_plain_worker(folder: Path, calls: int, concurrency: int) -> Path:
    """The baseline's worker (bare Celery app, POST-only task) over the same drain."""
    from common import plain_celery, plain_worker, seed_call

    from dispatcher.simulator import CadSimulator

    out = OUT / f"plain-worker-drain-0ms-c{concurrency}.raw"
    with ExitStack() as stack:
        server = stack.enter_context(private_redis(folder))
        sim = CadSimulator(community_id=COMMUNITY, api_key=API_KEY).start()
        stack.callback(sim.stop)
        worker = plain_worker(folder, server.url, sim.url, concurrency)
        stack.callback(worker.stop)
        app = plain_celery(server.url)
        stack.callback(app.close)
        for i in range(2 * concurrency):
            app.send_task("plain.post", args=[seed_call(i)])
        wait_for(lambda: len(sim.calls()) >= 2 * concurrency, 120, 0.1, "the plain worker")
        sim.reset()
        spy = attach(worker.pid, out)
        time.sleep(1.0)
        for i in range(calls):
            app.send_task("plain.post", args=[seed_call(i)])
        wait_for(lambda: len(sim.calls()) >= calls, 600, 0.3, "the drain")
        detach(spy)
    return out


def profile_producer(folder: Path, calls: int) -> Path:
    out = OUT / "producer-enqueue.raw"
    with private_redis(folder) as server:
        env = product_env(server.url, DISPATCHER_MAX_RATE="0")
        subprocess.run([py_spy(), "record", "--rate", "500", "--format", "raw", "-o", str(out),
                        "--", sys.executable, str(Path(__file__)), "_producer", str(calls)],
                       env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return out


def _producer_child(calls: int) -> None:
    """Run under py-spy: import first (not timed in the profile's story), then enqueue."""
    from dispatcher import Producer, enqueue_call
    from dispatcher.settings import Settings

    producer = Producer(Settings.from_env())
    for _ in range(100):
        enqueue_call(caller="warm", location="x", description="y", producer=producer)
    for i in range(calls):
        enqueue_seed(producer, i)
    producer.close()


def profile_web(folder: Path, seconds: float, rate: float) -> Path:
    from loadgen import build_request, open_loop, wait_http

    from dispatcher.cli.embedded import free_port

    out = OUT / "web-ingest.raw"
    body = json.dumps({"id": COMMUNITY, "key": API_KEY, "type": "CALL_911", "data": [
        {"serverId": 1, "isEmergency": True, "caller": "Caller", "location": "Route 68",
         "description": "Two-car collision", "metaData": {"postal": "350"}}]}).encode()
    with private_redis(folder) as server:
        port = free_port()
        web = dispatcher_proc("web", product_env(server.url, PORT=port,
                                                 DISPATCHER_WEB_HOST="127.0.0.1"), folder)
        try:
            wait_http("127.0.0.1", port)
            req = build_request("127.0.0.1", port, "/emergency/call_911", body)
            open_loop("127.0.0.1", port, lambda i: req, 200, 1)
            spy = attach(web.pid, out)
            time.sleep(1.0)
            open_loop("127.0.0.1", port, lambda i: req, rate, seconds)
            detach(spy)
        finally:
            web.stop()
    return out


def profile_bridge(folder: Path, entries: int) -> Path:
    out = OUT / "bridge-move.raw"
    with private_redis(folder) as server:
        client = client_for(server)
        bridge = dispatcher_proc("bridge", product_env(server.url), folder)
        try:
            inbox = "dispatcher:inbox"
            client.lpush(inbox, json.dumps({"caller": "w", "location": "x", "description": "y"}))
            wait_for(lambda: client.llen(inbox) == 0, 60, 0.05, "the bridge")
            spy = attach(bridge.pid, out)
            time.sleep(1.0)
            pipe = client.pipeline(transaction=False)
            for i in range(entries):
                pipe.lpush(inbox, json.dumps({"caller": f"Caller {i}", "location": f"{i} Rd",
                                              "description": "Crash", "postal": "350"}))
            pipe.execute()
            wait_for(lambda: client.llen(inbox) == 0, 600, 0.05, "the bridge")
            detach(spy)
        finally:
            bridge.stop()
            client.close()
    return out


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "_producer":
        _producer_child(int(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="worker,plain,producer,web,bridge")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    only = set(args.only.split(","))
    files: dict[str, Path] = {}
    try:
        if "worker" in only:
            progress("profile: worker during a drain (0 ms CAD, c=8)")
            files["worker (drain, CAD 0 ms, c=8)"] = profile_worker(folder, args.calls, 0, 8)
            progress("profile: worker during a drain (100 ms CAD, c=32)")
            files["worker (drain, CAD 100 ms, c=32)"] = profile_worker(
                folder, min(args.calls, 1500), 100, 32)
        if "plain" in only:
            progress("profile: plain Celery worker during the same drain (0 ms CAD, c=8)")
            files["plain Celery worker (drain, CAD 0 ms, c=8)"] = profile_plain_worker(
                folder, args.calls, 8)
        if "producer" in only:
            progress("profile: producer during enqueue_call")
            files["producer (enqueue_call loop)"] = profile_producer(folder, args.calls * 3)
        if "web" in only:
            progress("profile: web at 600 requests/s")
            files["web (POST /emergency/call_911 at 600/s)"] = profile_web(folder, 6, 600)
        if "bridge" in only:
            progress("profile: bridge moving a backlog")
            files["bridge (moving a backlog)"] = profile_bridge(folder, args.calls * 2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"figure": "profile",
              "command": f"bench/profile.py --only {args.only} --calls {args.calls}",
              "profiles": {name: {"raw": str(path.relative_to(ROOT)), **summarise(path)}
                           for name, path in files.items() if path.exists()}}
    emit(result, args.json, render)
    return 0


def render(result: dict[str, Any]) -> str:
    lines = []
    for name, prof in result["profiles"].items():
        lines.append(f"== {name}: {prof['samples']} samples ({prof['raw']})")
        lines.append("  self time, % of samples:")
        lines += [f"    {pct:5.1f}  {func}" for func, pct in prof["self_pct"][:15]]
        lines.append("  inclusive, our code:")
        lines += [f"    {pct:5.1f}  {func}" for func, pct in prof["ours_inclusive_pct"][:15]]
        lines.append("  self time by package:")
        lines += [f"    {pct:5.1f}  {pkg}" for pkg, pct in prof["self_pct_by_package"]]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
