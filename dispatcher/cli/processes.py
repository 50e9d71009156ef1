"""The long-running processes of the Procfile: worker, scheduler, bridge and web.

`require_free_port` and `stop_on_signals` also serve `dispatcher run` (`runner`, `demo`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from dispatcher import clock as shared_clock
from dispatcher.cli.console import CliError, client_for, first_line
from dispatcher.redisconn import UNREACHABLE, refusal
from dispatcher.settings import DEFAULT_WEB_HOST, Settings

#: How long a process starting waits for a Redis that does not answer yet (one being
#: restarted, a container starting beside it) before it gives up with one line.
STARTUP_WAIT_S = 10.0


def ping(settings: Settings, wait_s: float = STARTUP_WAIT_S) -> None:
    """Reach Redis, trying again for ``wait_s``; a refusal that waiting cannot mend (TLS,
    credentials) fails at once."""
    client = client_for(settings)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.ping()
            return
        except UNREACHABLE as exc:
            why = refusal(exc)
            if why or time.monotonic() >= deadline:
                raise CliError(f"cannot reach Redis at {settings.redacted()['redis_url']}: "
                               f"{why or first_line(exc)}") from None
            time.sleep(0.5)


def require_free_port(host: str, port: int, variable: str) -> None:
    """A one-line `CliError` naming `variable` when `host`:`port` is taken."""
    from dispatcher.cli.embedded import port_free

    if not port_free(host, port):
        raise CliError(f"port {port} on {host} is in use: set {variable} to a free port")


def setup_logging(level: str = "INFO") -> None:
    from dispatcher import redact

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact.add_to_handlers()


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C)."""
    stop = threading.Event()

    def handler(signum: int, _: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def worker(settings: Settings, args: argparse.Namespace) -> int:
    """``dispatcher worker``: the Celery worker that sends calls to the CAD."""
    settings.require_credentials()
    from workers.app import app

    concurrency = args.concurrency or settings.concurrency
    app.worker_main([
        "worker", "-Q", settings.queue_name, "--pool", "threads", "-c", str(concurrency),
        "--loglevel", args.loglevel, "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-n", getattr(args, "hostname", None) or "dispatcher@%h-%i",
    ])
    return 0


def _loop(name: str, settings: Settings, body: Callable[[threading.Event], None]) -> int:
    setup_logging()
    ping(settings)
    stop = stop_on_signals()
    logging.getLogger("dispatcher").info("%s: started", name)
    body(stop)
    logging.getLogger("dispatcher").info("%s: stopped", name)
    return 0


def scheduler(settings: Settings, args: argparse.Namespace | None = None) -> int:
    """``dispatcher scheduler``: due retries and the backlog back into play (no options)."""
    from dispatcher.broker import Publisher
    from dispatcher.communities import Live, load
    from dispatcher.history import History
    from dispatcher.schedule import FULL_SWEEP_S, TICK_S, Pump, busy, tick_all

    load(settings)  # a wrong file stops the start, with its one line

    def body(stop: threading.Event) -> None:
        client = client_for(settings)
        publisher = Publisher(settings).bind(client)
        live = Live(settings, client)
        generation = -1
        next_sweep = 0.0
        pumps: list[Pump] = []
        histories: list[History] = []
        while not stop.is_set():
            try:
                shared_clock.sync_if_due(client)  # Redis's clock, measured every minute
                served = live.current()
                if live.generation != generation:  # started, or the file was reloaded
                    generation = live.generation
                    # One pump per community: its own line, breaker and rate limit.
                    pumps = [Pump(client, c.settings, publisher.sharing(c.settings))
                             for c in served]
                    histories = [History(client, c.prefix) for c in served]
                moved = 0
                sweep = time.monotonic() >= next_sweep
                if sweep:
                    next_sweep = time.monotonic() + FULL_SWEEP_S
                waiting = [True] * len(pumps) if sweep else busy(client, pumps)
                ticking = [pump for pump, has_calls in zip(pumps, waiting, strict=True)
                           if has_calls]
                # Every community with calls waiting in two round trips, however many.
                moved += sum(r.total() for r in tick_all(client, ticking, paced=True))
                for history in histories:
                    history.tick()  # one sample per 10 s for the operations page's chart
            except redis.RedisError as exc:
                # Down, or refusing writes (OOM under noeviction, READONLY): every step is
                # atomic, so waiting and trying again is always safe.
                logging.getLogger("dispatcher.scheduler").warning(
                    "Redis unavailable (%s: %s); retrying", type(exc).__name__, first_line(exc))
                stop.wait(1.0)
                continue
            if moved == 0:
                stop.wait(TICK_S)

    return _loop("scheduler", settings, body)


def bridge(settings: Settings, args: argparse.Namespace | None = None) -> int:
    """``dispatcher bridge``: the Redis inbox into the queue (no options)."""
    from dispatcher.bridge import main_loop
    from dispatcher.producer import Producer

    def body(stop: threading.Event) -> None:
        main_loop(Producer(settings.with_(spool_dir=None)), settings.inbox_key, stop)

    return _loop("bridge", settings, body)


def web(settings: Settings, args: argparse.Namespace | None = None) -> int:
    """``dispatcher web``: HTTP ingest, probes, /metrics and the operations page (no options)."""
    setup_logging()
    from dispatcher.http.server import serve

    ping(settings)
    host = settings.web_host or DEFAULT_WEB_HOST
    require_free_port(host, settings.port, "PORT")
    serve(settings, host=host)
    return 0
