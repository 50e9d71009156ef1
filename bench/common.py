"""Shared helpers of the benchmarks: a private Redis, product processes, CPU, statistics.

Every benchmark starts its own redis-server (EmbeddedRedis on a free port) and never
touches the machine's Redis. Product processes are started as a user starts them
(``python -m dispatcher worker|scheduler|bridge|web``) with the contract's variables;
baselines are plain Celery apps, plain servers and plain loops written out below.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispatcher import Producer, enqueue_call  # noqa: E402
from dispatcher.cli.embedded import EmbeddedRedis, free_port  # noqa: E402

COMMUNITY = "bench-community"
API_KEY = "bench-key-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- output --------------------------------------------------------------------------------

def progress(message: str) -> None:
    """A progress line on stderr, only when stderr is a terminal."""
    if sys.stderr.isatty():
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))


# -- statistics ----------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty list."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * p / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def med(values: list[float]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


def rnd(value: float, digits: int = 3) -> float:
    return round(value, digits) if value == value else value  # keep NaN


def median_of_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median of the numeric values over runs (nested dicts recursed)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if all(isinstance(v, dict) for v in values):
            out[key] = median_of_runs(values)  # type: ignore[arg-type]
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = rnd(med([float(v) for v in values]), 4)  # type: ignore[arg-type]
        else:
            out[key] = values[-1]
    return out


def ratio(ours: float, base: float, digits: int = 2) -> float:
    return round(ours / base, digits) if base else float("nan")


# -- processes -----------------------------------------------------------------------------

def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process and all its descendants (live ones), in seconds."""
    user = system = 0
    for p in [pid, *descendants(pid)]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is field 3 (state); utime, stime are fields 14, 15.
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (live ones), in seconds."""
    return sum(cpu_split(pid))


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids: list[int] = []
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            with contextlib.suppress(OSError):
                kids += [int(x) for x in
                         Path(f"/proc/{parent}/task/{tid}/children").read_text().split()]
        found += kids
        frontier += kids
    return found


def product_env(redis_url: str, api_url: str | None = None, **extra: Any) -> dict[str, str]:
    """The environment of a product process: the contract's variables, nothing inherited."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SONORAN_", "DISPATCHER_", "REDIS_URL", "PORT"))}
    env.update({
        "REDIS_URL": redis_url,
        "SONORAN_COMMUNITY_ID": COMMUNITY,
        "SONORAN_API_KEY": API_KEY,
        "PYTHONUNBUFFERED": "1",
    })
    if api_url is not None:
        env["SONORAN_API_URL"] = api_url
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


class Proc:
    """A child process in its own session (so a Celery worker and its children go together)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path,
                 cwd: Path = ROOT) -> None:
        self.argv = argv
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.stopped = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pause(self) -> None:
        if self.alive() and not self.stopped:
            os.killpg(self.proc.pid, signal.SIGSTOP)
            self.stopped = True

    def resume(self) -> None:
        if self.alive() and self.stopped:
            os.killpg(self.proc.pid, signal.SIGCONT)
            self.stopped = False

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                if self.stopped:
                    os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self._fh.closed:
            self._fh.close()

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def dispatcher_proc(name: str, env: dict[str, str], folder: Path, *extra: str) -> Proc:
    return Proc([sys.executable, "-m", "dispatcher", name, *extra], env,
                folder / f"{name}-{time.time_ns()}.log")


@contextlib.contextmanager
def private_redis(folder: Path, name: str = "redis") -> Iterator[EmbeddedRedis]:
    """A redis-server of our own on a free port (append-only file on, as the product wants)."""
    server = EmbeddedRedis(folder / f"{name}-{time.time_ns()}", port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def redis_cpu(server: EmbeddedRedis) -> float:
    return cpu_seconds(server.proc.pid) if server.proc else 0.0


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.01,
             what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def client_for(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url)


# -- plain baselines -----------------------------------------------------------------------

#: A bare Celery app whose one task only POSTs the seed's v1 body to the CAD (a requests
#: Session per thread, as our worker has, so the baseline keeps its connections too).
#: Celery's defaults otherwise (early ack, prefetch multiplier 4): the plain recipe.
#: PLAIN_RATE_LIMIT (e.g. "1/s") sets Celery's own per-worker rate limit on the task.
PLAIN_APP = '''
import os, threading
import requests
from celery import Celery

app = Celery("plain", broker=os.environ["PLAIN_BROKER"])
app.conf.update(result_backend=None, task_ignore_result=True,
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
if os.environ.get("PLAIN_RATE_LIMIT"):
    app.conf.task_annotations = {"plain.post": {"rate_limit": os.environ["PLAIN_RATE_LIMIT"]}}
URL = os.environ["PLAIN_CAD_URL"] + "/emergency/call_911"
ENVELOPE = {"id": os.environ["PLAIN_COMMUNITY"], "key": os.environ["PLAIN_KEY"],
            "type": "CALL_911"}
_local = threading.local()

def _session():
    s = getattr(_local, "s", None)
    if s is None:
        s = _local.s = requests.Session()
    return s

@app.task(name="plain.post", ignore_result=True)
def post(call):
    r = _session().post(URL, json={**ENVELOPE, "data": [call]}, timeout=(3.05, 10))
    return r.status_code

@app.task(name="plain.noop", ignore_result=True)
def noop(call):
    return None
'''


def plain_worker(folder: Path, broker_url: str, cad_url: str, concurrency: int,
                 rate_limit: str | None = None, pool: str = "threads") -> Proc:
    """A worker of the bare Celery app above (``celery -A plainapp worker``)."""
    app_dir = folder / f"plain-{time.time_ns()}"
    app_dir.mkdir(parents=True)
    (app_dir / "plainapp.py").write_text(PLAIN_APP)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SONORAN_", "DISPATCHER_", "REDIS_URL"))}
    env.update(PYTHONPATH=str(app_dir), PLAIN_BROKER=broker_url, PLAIN_CAD_URL=cad_url,
               PLAIN_COMMUNITY=COMMUNITY, PLAIN_KEY=API_KEY, PYTHONUNBUFFERED="1")
    if rate_limit:
        env["PLAIN_RATE_LIMIT"] = rate_limit
    return Proc([sys.executable, "-m", "celery", "-A", "plainapp", "worker", "--pool", pool,
                 "-c", str(concurrency), "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "--loglevel", "WARNING"],
                env, app_dir / "worker.log", cwd=app_dir)


def plain_celery(broker_url: str) -> Any:
    """A bare Celery app in this process, to publish to the plain worker with send_task."""
    from celery import Celery

    app = Celery("plain", broker=broker_url, set_as_current=False)
    app.conf.update(result_backend=None, task_ignore_result=True,
                    broker_connection_retry_on_startup=True)
    return app


def seed_call(i: int, description: str = "Two-car collision") -> dict[str, Any]:
    """One call in the seed's shape (what ends up in the v1 body's data[])."""
    return {"serverId": 1, "isEmergency": True, "caller": f"Caller {i}",
            "location": f"{i} Route 68 / Joshua Rd", "description": description,
            "metaData": {"postal": "350", "plate": "8ABC123"}}


def enqueue_seed(producer: Producer, i: int, description: str = "Two-car collision") -> str:
    """Enqueue the call `seed_call(i, description)` describes, through our public API."""
    return enqueue_call(caller=f"Caller {i}", location=f"{i} Route 68 / Joshua Rd",
                        description=description, postal="350", plate="8ABC123",
                        producer=producer)


def machine() -> dict[str, Any]:
    """The machine, for the report."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    from dispatcher.cli.embedded import server_binary

    redis_version = subprocess.run([server_binary(), "--version"], capture_output=True,
                                   text=True).stdout.split()
    import celery
    import kombu

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "product_files_modified": [
            line[3:] for line in git("--no-optional-locks", "status", "--porcelain").splitlines()
            if line[3:].startswith(("dispatcher/", "workers/"))],
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": mem_gib,
        "python": sys.version.split()[0],
        "redis_server": next((w[2:] for w in redis_version if w.startswith("v=")), "?"),
        "redis_py": redis.__version__,
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "loadavg_at_start": os.getloadavg()[0],
    }
