"""Scale curves: drain and enqueue at 1, 2, 4 and 8 processes, Redis commands per
delivered call and Redis memory per waiting call, against plain Celery in the same run.

For each P in ``--procs`` (fresh private Redis servers and fresh processes each time),
two sides, each with its own redis-server and its own CAD simulator (in this process):

- ours: P ``python -m dispatcher worker --concurrency C`` processes (threads pool, a
  distinct ``-n`` each) and one ``scheduler``, DISPATCHER_MAX_RATE=0, every durability
  feature on; P producer processes calling ``enqueue_call``;
- plain: P workers of the bare Celery app of bench/common.py (``--pool threads -c C``,
  its task only POSTs); P producer processes calling bare Celery ``send_task``.

A measurement, per side, CAD latency L and run (the other side frozen; the sides
alternate which goes first): the side's workers are frozen (SIGSTOP), the P producers
enqueue N calls between them at once (enqueue throughput: N over the first start to
the last finish), the workers are resumed and the backlog is timed from the resume to
the simulator's receipt of the last call (drain throughput; worker CPU per call from
/proc, as bench/drain.py). Around both steps, ``INFO all`` of the side's Redis
(bench/redisstats.py): commands (``INFO commandstats``, which counts the commands Lua
scripts run) and round trips (``total_reads_processed``) per enqueued and per
delivered call, by command name, and ``used_memory`` after the enqueue over before it
per waiting call. The drain window ends 0.5 s after the last receipt, so the last
outcomes and acks are in; the commands the idle processes make meanwhile (measured
once per P, ``idle``) are in too, and ``idle_share`` estimates them per call.

The memory figure: once, at the largest P, ``--memory-calls`` calls left waiting with
every process of the side frozen, ``used_memory`` after over before, per call.

Ours holds at most 256 Celery messages out at once (``UNLIMITED_WINDOW``): of a backlog
of N, the first 256 are pushed with their record and the rest held in Redis (released
by the scheduler as the workers drain). So the enqueue figure is the recording path
mostly held, and the memory per waiting call is that mix; plain Celery pushes every
message onto its list.

    .venv/bin/python bench/scale.py [--procs 1,2,4,8] [--concurrency 8] [--latencies 0,100]
        [--calls 600] [--seconds 2] [--runs 3] [--quick] [--json]

N is ``--calls`` at 0 ms, and at L ms enough for about ``--seconds`` of ideal drain
(P x C / L calls per second), at least 200 and at most ``--calls``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from common import (
    API_KEY,
    COMMUNITY,
    ROOT,
    Proc,
    client_for,
    dispatcher_proc,
    emit,
    enqueue_seed,
    machine,
    med,
    plain_celery,
    plain_worker,
    private_redis,
    product_env,
    progress,
    ratio,
    redis_cpu,
    rnd,
    seed_call,
    wait_for,
)
from redisstats import Counters, counters, delta, per_call

from dispatcher.simulator import CadSimulator  # noqa: E402

#: Seconds after the last receipt before the closing snapshot: the outcome script and
#: the ack of the last calls run after the CAD answered.
SETTLE_S = 0.5
#: Most commands named in each per-call breakdown (the rest summed as ``other``).
TOP_COMMANDS = 12
QUICK = {"runs": 1, "calls": 300, "seconds": 1.0, "memory_calls": 1000}


def calls_for(procs: int, concurrency: int, latency_ms: float, calls: int,
              seconds: float) -> int:
    """The backlog of one measurement: ``calls`` at 0 ms; at L ms about ``seconds`` of
    ideal drain (procs x concurrency / L per second), at least 200, at most ``calls``."""
    if latency_ms <= 0:
        return calls
    ideal = procs * concurrency / (latency_ms / 1000.0) * seconds
    return max(min(200, calls), min(calls, int(ideal)))


def shares(n: int, parts: int) -> list[int]:
    """n split into ``parts`` nearly equal counts (the larger first)."""
    return [n // parts + (1 if k < n % parts else 0) for k in range(parts)]


# -- producer processes --------------------------------------------------------------------

def producer_child(side: str, warm: int) -> int:
    """A producer process (``--producer SIDE``): warms up, says ``ready``, then for each
    ``go FIRST COUNT`` line on stdin enqueues calls FIRST.. and answers one JSON line."""
    if side == "ours":
        from dispatcher import Producer
        from dispatcher.settings import Settings

        producer = Producer(Settings.from_env(dict(os.environ)))

        def send(i: int) -> None:
            enqueue_seed(producer, i)

        close = producer.close
    else:
        app = plain_celery(os.environ["REDIS_URL"])

        def send(i: int) -> None:
            app.send_task("plain.post", args=[seed_call(i)])

        close = app.close
    base = 10_000_000 * (1 + os.getpid() % 100)
    for i in range(warm):  # connections, script cache, Celery's producer pool
        send(base + i)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        first, count = int(words[1]), int(words[2])
        cpu0, t0 = time.process_time(), time.time()
        for i in range(first, first + count):
            send(i)
        t1 = time.time()
        print(json.dumps({"t0": t0, "t1": t1, "cpu_s": time.process_time() - cpu0,
                          "n": count}), flush=True)
    close()
    return 0


class Producers:
    """P producer processes of one side, started once and driven over their stdin."""

    def __init__(self, side: str, count: int, env: dict[str, str], folder: Path,
                 warm: int) -> None:
        self.logs = [folder / f"producer-{side}-{k}-{time.time_ns()}.log" for k in range(count)]
        self.procs: list[subprocess.Popen[str]] = []
        self._fhs: list[IO[bytes]] = []
        for log in self.logs:
            fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
            self._fhs.append(fh)
            self.procs.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--producer", side,
                 "--warm", str(warm)], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=fh, text=True, start_new_session=True))

    def _line(self, k: int) -> str:
        out = self.procs[k].stdout
        line = out.readline() if out else ""
        if not line:
            raise RuntimeError(f"producer {k} ended: {self.logs[k].read_text()[-2000:]}")
        return line

    def ready(self) -> None:
        for k in range(len(self.procs)):
            if self._line(k).strip() != "ready":
                raise RuntimeError(f"producer {k} did not start")

    def go(self, n: int) -> dict[str, float]:
        """N calls enqueued by all at once: calls/s over the whole, CPU per call."""
        first = 0
        for proc, count in zip(self.procs, shares(n, len(self.procs)), strict=True):
            assert proc.stdin is not None
            proc.stdin.write(f"go {first} {count}\n")
            proc.stdin.flush()
            first += count
        done = [json.loads(self._line(k)) for k in range(len(self.procs))]
        wall = max(d["t1"] for d in done) - min(d["t0"] for d in done)
        return {"calls_per_s": n / wall,
                "cpu_us_per_call": sum(d["cpu_s"] for d in done) * 1e6 / n}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write("quit\n")
                    proc.stdin.close()
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for fh in self._fhs:
            fh.close()


# -- one side ------------------------------------------------------------------------------

class Side:
    """One side at P processes: its Redis, simulator, workers, producers."""

    def __init__(self, name: str, stack: ExitStack, folder: Path, procs: int,
                 concurrency: int) -> None:
        self.name = name
        self.procs_n = procs
        self.concurrency = concurrency
        self.redis = stack.enter_context(private_redis(folder, f"redis-{name}-{procs}"))
        self.client = client_for(self.redis)
        stack.callback(self.client.close)
        self.sim = CadSimulator(community_id=COMMUNITY, api_key=API_KEY).start()
        stack.callback(self.sim.stop)
        self.others: list[Proc] = []
        if name == "ours":
            self.env = product_env(self.redis.url, self.sim.url, DISPATCHER_MAX_RATE="0",
                                   DISPATCHER_CONCURRENCY=concurrency)
            self.workers = [dispatcher_proc("worker", self.env, folder, "--concurrency",
                                            str(concurrency), "-n", f"dispatcher{k}@%h")
                            for k in range(procs)]
            self.others = [dispatcher_proc("scheduler", self.env, folder)]
        else:
            self.env = {k: v for k, v in os.environ.items()
                        if not k.startswith(("SONORAN_", "DISPATCHER_"))}
            self.env.update(REDIS_URL=self.redis.url, PYTHONUNBUFFERED="1")
            self.workers = [plain_worker(folder, self.redis.url, self.sim.url, concurrency)
                            for _ in range(procs)]
        for p in [*self.workers, *self.others]:
            stack.callback(p.stop)
        self.folder = folder
        self.producers: Producers | None = None
        self._stack = stack

    def start(self, warm_per_producer: int) -> None:
        """Wait for every worker to listen, then start the producers (their warm-up
        calls go through every worker) and wait for the warm-up to be delivered."""
        wait_for(lambda: int(self.client.info("clients")["blocked_clients"]) >= self.procs_n,
                 120, 0.2, f"{self.procs_n} {self.name} workers to listen")
        self.producers = Producers(self.name, self.procs_n, self.env, self.folder,
                                   warm_per_producer)
        self._stack.callback(self.producers.stop)
        self.producers.ready()
        wait_calls(self.sim, self.procs_n * warm_per_producer, 120)

    def snapshot(self) -> Counters:
        return counters(self.client.info("all"))

    def pause(self) -> None:
        for p in [*self.workers, *self.others]:
            p.pause()

    def resume(self) -> None:
        for p in [*self.workers, *self.others]:
            p.resume()

    def idle(self, seconds: float) -> dict[str, float]:
        """Commands and round trips per second with every process up and nothing to do."""
        self.resume()
        time.sleep(0.3)
        before = self.snapshot()
        t0 = time.time()
        time.sleep(seconds)
        d = delta(before, self.snapshot())
        elapsed = time.time() - t0
        self.pause()
        return {"commands_per_s": rnd(sum(d.commands.values()) / elapsed, 1),
                "round_trips_per_s": rnd(d.reads / elapsed, 1)}

    def memory(self, n: int) -> float:
        """Redis used_memory per waiting call: N calls enqueued by the producers with
        every process of the side frozen (nothing drains them; the side ends after)."""
        assert self.producers is not None
        self.pause()
        before = self.snapshot()
        self.producers.go(n)
        return rnd(delta(before, self.snapshot()).used_memory / n, 1)

    def measure(self, n: int, latency_ms: float) -> dict[str, Any]:
        assert self.producers is not None
        self.sim.reset()
        self.sim.set_latency(latency_ms)
        for w in self.workers:
            w.pause()
        s0 = self.snapshot()
        enq = self.producers.go(n)
        s1 = self.snapshot()
        cpu_w = sum(w.cpu() for w in self.workers)
        cpu_o = sum(p.cpu() for p in self.others)
        cpu_r = redis_cpu(self.redis)
        resumed = time.time()
        for w in self.workers:
            w.resume()
        calls = wait_calls(self.sim, n, 600)
        cpu_w = sum(w.cpu() for w in self.workers) - cpu_w
        cpu_o = sum(p.cpu() for p in self.others) - cpu_o
        cpu_r = redis_cpu(self.redis) - cpu_r
        last = max(c["at"] for c in calls)
        time.sleep(SETTLE_S)
        s2 = self.snapshot()
        window_s = time.time() - resumed
        stats = self.sim.stats()
        enqueued, delivered = delta(s0, s1), delta(s1, s2)
        return {
            "calls_per_s": n / (last - resumed),
            "worker_cpu_ms_per_call": cpu_w * 1000 / n,
            "machinery_cpu_ms_per_call": (cpu_w + cpu_o + cpu_r) * 1000 / n,
            "enqueue_calls_per_s": enq["calls_per_s"],
            "enqueue_cpu_us_per_call": enq["cpu_us_per_call"],
            "redis_bytes_per_waiting_call": enqueued.used_memory / n,
            "per_enqueued_call": per_call(enqueued, n, TOP_COMMANDS),
            "per_delivered_call": per_call(delivered, n, TOP_COMMANDS),
            "drain_window_s": window_s,
            "non_200": sum(v for k, v in stats["by_status"].items() if k != "200"),
            "duplicates": stats["duplicates"],
        }


def wait_calls(sim: CadSimulator, n: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.time() + timeout
    while True:
        calls = sim.calls()
        if len(calls) >= n:
            return calls
        if time.time() > deadline:
            raise TimeoutError(f"only {len(calls)} of {n} calls reached the CAD")
        time.sleep(0.2)


def median_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median over runs (nested dicts recursed; a key missing in a run's
    breakdown counts as 0 there)."""
    out: dict[str, Any] = {}
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    for key in keys:
        values = [row.get(key) for row in rows]
        if any(isinstance(v, dict) for v in values):
            out[key] = median_rows([v if isinstance(v, dict) else {} for v in values])
        else:
            out[key] = rnd(med([float(v or 0) for v in values]), 3)
    return out


def one_procs(procs: int, args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """Every latency at P processes, both sides, ``args.runs`` runs."""
    with ExitStack() as stack:
        progress(f"scale: P={procs}: starting {procs} workers a side")
        sides = {name: Side(name, stack, folder, procs, args.concurrency)
                 for name in ("ours", "plain")}
        for side in sides.values():
            side.start(warm_per_producer=max(20, 2 * args.concurrency))
            side.pause()
        idle = {name: side.idle(args.idle) for name, side in sides.items()}
        memory: dict[str, float] = {}
        results: dict[tuple[float, str], list[dict[str, Any]]] = {}
        for r in range(args.runs):
            for latency_ms in args.latencies:
                n = calls_for(procs, args.concurrency, latency_ms, args.calls, args.seconds)
                order = ["ours", "plain"] if r % 2 == 0 else ["plain", "ours"]
                for name in order:
                    progress(f"scale: P={procs}, {latency_ms:g} ms, run {r + 1}/{args.runs}: "
                             f"{name} x{n}")
                    side = sides[name]
                    side.resume()
                    time.sleep(0.2)
                    results.setdefault((latency_ms, name), []).append(side.measure(
                        n, latency_ms))
                    side.pause()
        if procs == max(args.procs_list) and args.memory_calls > 0:
            for name, side in sides.items():
                progress(f"scale: memory: {name} x{args.memory_calls}, everything frozen")
                memory[name] = side.memory(args.memory_calls)
    rows = []
    for latency_ms in args.latencies:
        n = calls_for(procs, args.concurrency, latency_ms, args.calls, args.seconds)
        row: dict[str, Any] = {"procs": procs, "latency_ms": latency_ms, "calls": n}
        for name in ("ours", "plain"):
            runs = results[(latency_ms, name)]
            row[name] = median_rows(runs)
            row[name]["per_run_calls_per_s"] = [round(x["calls_per_s"], 1) for x in runs]
            row[name]["idle"] = idle[name]
            # What the idle processes alone would have sent over the drain window.
            row[name]["idle_share_per_call"] = {
                "commands": rnd(idle[name]["commands_per_s"]
                                * row[name]["drain_window_s"] / n, 3),
                "round_trips": rnd(idle[name]["round_trips_per_s"]
                                   * row[name]["drain_window_s"] / n, 3)}
        o, p = row["ours"], row["plain"]
        row["ratios"] = {
            "calls_per_s": ratio(o["calls_per_s"], p["calls_per_s"]),
            "worker_cpu_ms_per_call": ratio(o["worker_cpu_ms_per_call"],
                                            p["worker_cpu_ms_per_call"]),
            "enqueue_calls_per_s": ratio(o["enqueue_calls_per_s"], p["enqueue_calls_per_s"]),
            "commands_per_delivered_call": ratio(o["per_delivered_call"]["commands"],
                                                 p["per_delivered_call"]["commands"]),
            "round_trips_per_delivered_call": ratio(o["per_delivered_call"]["round_trips"],
                                                    p["per_delivered_call"]["round_trips"]),
        }
        if memory:
            row["memory_bytes_per_waiting_call"] = memory
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2,4,8", help="worker (and producer) processes")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker")
    parser.add_argument("--latencies", default="0,100", help="CAD latencies, ms")
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-calls", type=int, default=5000,
                        help="calls left waiting for the memory figure (at the largest P)")
    parser.add_argument("--idle", type=float, default=1.5,
                        help="seconds the idle processes' commands are counted")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK} (every P still)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--producer", choices=("ours", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--warm", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.producer:
        return producer_child(args.producer, args.warm)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.procs_list = [int(x) for x in args.procs.split(",")]
    args.latencies = [float(x) for x in args.latencies.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    at_start = machine()
    started = time.time()
    keep = False
    rows: list[dict[str, Any]] = []
    seconds_per_procs: dict[str, int] = {}
    try:
        for procs in args.procs_list:
            t0 = time.time()
            rows += one_procs(procs, args, folder)
            seconds_per_procs[str(procs)] = round(time.time() - t0)
            progress(f"scale: P={procs} done at {time.time() - started:.0f}s")
    except BaseException:
        keep = True
        print(f"kept the logs in {folder}", file=sys.stderr, flush=True)
        raise
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    first = args.latencies[0]
    result: dict[str, Any] = {
        "figure": "scale",
        "command": f"bench/scale.py --procs {args.procs} --concurrency {args.concurrency} "
                   f"--latencies {','.join(f'{x:g}' for x in args.latencies)} --calls "
                   f"{args.calls} --seconds {args.seconds:g} --runs {args.runs}"
                   + (" (--quick)" if args.quick else ""),
        "machine": at_start,
        "loadavg_at_end": os.getloadavg()[0],
        "seconds": round(time.time() - started),
        "seconds_per_procs": seconds_per_procs,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "counting": "commands: INFO commandstats (the commands Lua scripts run and those "
                    "inside MULTI/EXEC included; total_commands_processed agrees on Redis "
                    "6.2); round_trips: INFO stats total_reads_processed (one per request a "
                    "client sends and waits for: a command, a pipeline, an EVALSHA)",
        "rows": rows,
        "memory_calls": args.memory_calls,
        # Left waiting with everything frozen, at the largest P (bench/scale.py's doc).
        "memory_bytes_per_waiting_call": next(
            (r["memory_bytes_per_waiting_call"] for r in rows
             if "memory_bytes_per_waiting_call" in r), None),
        # The same, per measurement's backlog (N calls, before each drain): a median.
        "backlog_bytes_per_waiting_call": {
            name: rnd(med([r[name]["redis_bytes_per_waiting_call"] for r in rows
                           if r["latency_ms"] == first]), 0) for name in ("ours", "plain")},
    }
    emit(result, args.json, render)
    return 0


def render(result: dict[str, Any]) -> str:
    """The tables bench/report.py puts in docs/PERFORMANCE.md."""
    from report import scale

    return "\n".join(scale(result))


if __name__ == "__main__":
    raise SystemExit(main())
