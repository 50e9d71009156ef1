"""`dispatcher run`: every process of the Procfile in one command, for a small community.

It starts an embedded Redis when none answers at the default REDIS_URL, then the
worker, scheduler, bridge and web processes as children (restarted if they die), and
stops them all with SIGTERM on Ctrl-C or SIGTERM. ``--demo`` (`dispatcher.cli.demo`)
uses the same `Supervisor` on a private Redis with the CAD simulator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import redis

from dispatcher.cli.embedded import EmbeddedRedis
from dispatcher.cli.processes import require_free_port, stop_on_signals
from dispatcher.errors import ConfigError
from dispatcher.settings import DEFAULT_REDIS_URL, DEFAULT_RUN_WEB_HOST, Settings

PROCESSES = ("worker", "scheduler", "bridge", "web")
#: Local folder of `run`'s state: the embedded Redis's data and the children's logs.
STATE_DIR = Path(".dispatcher")
#: A child that dies is restarted after this pause, doubling per quick crash.
RESTART_DELAY_S = 1.0
#: Longest pause between restarts of a crashing child.
MAX_RESTART_DELAY_S = 30.0
#: A child that lived this long before exiting counts as healthy again.
HEALTHY_AFTER_S = 60.0


def child_env(settings: Settings) -> dict[str, str]:
    """This environment with the settings `run` decided on (the key goes by environment only)."""
    env = dict(os.environ)
    env.update({
        "REDIS_URL": settings.redis_url,
        "SONORAN_API_URL": settings.api_url,
        "SONORAN_SERVER_ID": settings.server_id,
        "SONORAN_API_VERSION": str(settings.api_version),
        "DISPATCHER_MAX_RATE": repr(settings.max_rate),
        "DISPATCHER_INBOX_KEY": settings.inbox_key,
        "PORT": str(settings.port),
        "DISPATCHER_WEB_HOST": settings.web_host or DEFAULT_RUN_WEB_HOST,
        "DISPATCHER_CONCURRENCY": str(settings.concurrency),
        "DISPATCHER_VISIBILITY_TIMEOUT_S": repr(settings.visibility_timeout_s),
        "DISPATCHER_READ_TIMEOUT_S": repr(settings.read_timeout_s),
        "DISPATCHER_CIRCUIT_COOLDOWN_S": repr(settings.circuit_cooldown_s),
        "DISPATCHER_CIRCUIT_MAX_COOLDOWN_S": repr(settings.circuit_max_cooldown_s),
        "DISPATCHER_ORPHAN_AFTER_S": repr(settings.orphan_after_s),
        "PYTHONUNBUFFERED": "1",
    })
    if settings.community_id:
        env["SONORAN_COMMUNITY_ID"] = settings.community_id
    if settings.api_key:
        env["SONORAN_API_KEY"] = settings.api_key.reveal()
    if settings.max_age_s:
        env["DISPATCHER_MAX_AGE_S"] = repr(settings.max_age_s)
    return env


class Supervisor:
    """Starts the children, restarts any that dies, stops them all on request."""

    def __init__(self, settings: Settings, log_dir: Path | None, names: tuple[str, ...]) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.names = names
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self.crashes: dict[str, int] = {}
        self.last_words: dict[str, str] = {}
        self.stopping = threading.Event()
        self._pumps: list[threading.Thread] = []

    def start(self, name: str) -> None:
        out: int | IO[bytes] = subprocess.PIPE
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen([sys.executable, "-m", "dispatcher", name],
                                env=child_env(self.settings), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        if self.log_dir is None and proc.stdout is not None:
            t = threading.Thread(target=_prefix, args=(name, proc.stdout), daemon=True)
            t.start()
            self._pumps.append(t)
        elif not isinstance(out, int):
            out.close()
        self.children[name] = proc
        self.started_at[name] = time.time()

    def last_line(self, name: str) -> str:
        """The last line a child wrote to its log (why it died, usually)."""
        if self.log_dir is None:
            return ""
        try:
            lines = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return next((line.strip() for line in reversed(lines) if line.strip()), "")[:300]

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def restart(self, name: str, settings: Settings | None = None) -> None:
        """Stop one child gracefully and start it again (with new settings if given)."""
        if settings is not None:
            self.settings = settings
        proc = self.children.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        self.start(name)

    def watch(self) -> None:
        """Restart children that exit (with growing pauses), until stop() is called."""
        while not self.stopping.wait(0.5):
            for name, proc in list(self.children.items()):
                if proc.poll() is None or self.stopping.is_set():
                    continue
                lived = time.time() - self.started_at.get(name, 0.0)
                self.crashes[name] = 0 if lived > HEALTHY_AFTER_S else self.crashes.get(name, 0) + 1
                delay = min(MAX_RESTART_DELAY_S, RESTART_DELAY_S * 2 ** (self.crashes[name] - 1))
                why = self.last_line(name)
                self.last_words[name] = why
                print(f"dispatcher: {name} exited with {proc.returncode}"
                      + (f" ({why})" if why else "") + f"; restarting in {delay:g}s",
                      file=sys.stderr, flush=True)
                if self.stopping.wait(delay):
                    return
                self.start(name)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping.set()
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + timeout_s
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()


def _prefix(name: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:>9} | {line.decode(errors='replace')}")
        sys.stdout.flush()


def _answers(settings: Settings) -> bool:
    from dispatcher.redisconn import connect

    client = connect(settings, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_redis(settings: Settings, quiet: bool = False) -> tuple[Settings, EmbeddedRedis | None]:
    """Use REDIS_URL if it answers; else, for the default URL only, start an embedded Redis."""
    if _answers(settings):
        return settings, None
    if settings.redis_url != DEFAULT_REDIS_URL:
        raise ConfigError(f"cannot reach Redis at {settings.redacted()['redis_url']}")
    embedded = EmbeddedRedis(STATE_DIR / "redis").start()
    print(f"No Redis answered at {DEFAULT_REDIS_URL}: started an embedded Redis on "
          f"127.0.0.1:{embedded.port} (data in {STATE_DIR / 'redis'}, append-only file on).")
    return settings.with_(redis_url=embedded.url), embedded


def run(settings: Settings) -> int:
    """Start everything; block until Ctrl-C/SIGTERM. (``--demo`` is `demo.run_demo`.)"""
    settings.require_credentials()
    require_free_port("0.0.0.0", settings.port, "PORT")
    settings, embedded = ensure_redis(settings)
    stop = stop_on_signals()
    try:
        supervisor = Supervisor(settings, None, PROCESSES)
        supervisor.start_all()
        print(f"Running worker, scheduler, bridge and web (http://127.0.0.1:{settings.port}/). "
              "Ctrl-C stops everything; nothing queued is lost.", flush=True)
        watcher = threading.Thread(target=supervisor.watch, daemon=True)
        watcher.start()
        stop.wait()
        print("Stopping (SIGTERM to every process)...", flush=True)
        supervisor.stop()
        return 0
    finally:
        if embedded is not None:
            embedded.stop()
