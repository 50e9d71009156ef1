"""The Celery app of the worker process, built from one Settings object.

Run it with ``dispatcher worker`` (checks the configuration first and picks the pool),
or directly with ``celery -A workers worker``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import signals

from dispatcher import clock as shared_clock
from dispatcher import redact
from dispatcher.broker import make_celery
from dispatcher.errors import ConfigError
from dispatcher.heartbeat import Heartbeats, HeartbeatThread, worker_name
from dispatcher.settings import Settings
from workers import acks

log = logging.getLogger("dispatcher.worker")

try:
    settings = Settings.from_env()
except ConfigError as exc:  # a one-line error, not a traceback, even under `celery -A`
    print(f"dispatcher: error: {redact.text(exc)}", file=sys.stderr)
    sys.exit(2)
# Every log line of the worker (Celery's and kombu's included) loses the secrets.
redact.install(settings)

app = make_celery(settings)

def _reuse_ack_client() -> None:
    """Make kombu reuse one Redis client per channel for acks, and survive broker loss.

    kombu's Redis channel builds a new ``redis.Redis`` (over the same connection pool)
    for every ack; its constructor copies ~200 response callbacks, the single largest
    cost in the worker's profile (docs/PERFORMANCE.md). A client is thread-safe over its
    pool, so one per channel is enough; a new pool (after a reconnect) gets a new client.
    The same method is where kombu 5.7 stops the worker when Redis goes away while a
    message is unacked (see below). tests/integration/test_broker.py checks the method
    this replaces still exists, and that a worker survives a Redis restart mid-call.
    """
    from contextlib import contextmanager

    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    channel = kombu_redis.Channel
    if not all(hasattr(channel, name) for name in ("conn_or_acquire", "_create_client", "_pool")):
        return  # a kombu without this internal: keep its own behaviour

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Any:
        if client:
            yield client
            return
        if self._pool is None and getattr(self.connection, "client", None) is None:
            # The broker connection was lost and kombu has already closed the transport
            # under this channel (it then asks for a client to restore unacked messages).
            # kombu would fail here with an AttributeError that Celery treats as fatal,
            # stopping the worker; as a connection error it is ignored, Celery reconnects,
            # and the unacked message comes back with the visibility timeout (the call
            # itself is safe in our records either way).
            raise RedisConnectionError("broker connection closed")
        pool = self.pool
        cached = self.__dict__.get("_dispatcher_client")
        if cached is None or cached.connection_pool is not pool:
            cached = self.__dict__["_dispatcher_client"] = self._create_client()
        yield cached

    channel.conn_or_acquire = conn_or_acquire  # type: ignore[method-assign]


#: Seconds between the worker's attempts to reach a lost broker (first, step, most).
RECONNECT_INTERVALS = (1.0, 1.0, 2.0)


def _reconnect_promptly() -> None:
    """Retry a lost broker every second or two instead of backing off to 30 s.

    Celery's consumer reconnects through kombu's ``ensure_connection`` with kombu's
    defaults (2 s, then 4, 6, ... up to 30 s apart), so after a Redis outage of a minute
    the worker could wait 30 s more before taking calls again. A connection attempt to
    Redis costs next to nothing; every 2 s at most bounds that wait (measured: 5.1 s
    after a 15 s outage before, tests/chaos: ``worker_reconnects_promptly``).
    """
    from kombu import Connection

    original = Connection.ensure_connection
    if getattr(original, "_dispatcher", False):
        return
    first, step, most = RECONNECT_INTERVALS

    def ensure_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("interval_start", first)
        kwargs.setdefault("interval_step", step)
        kwargs.setdefault("interval_max", most)
        return original(self, *args, **kwargs)

    ensure_connection._dispatcher = True  # type: ignore[attr-defined]
    Connection.ensure_connection = ensure_connection  # type: ignore[method-assign]


_reuse_ack_client()
_reconnect_promptly()
acks.install()  # delivery messages: acked in memory, our records recover them (acks.py)

# Celery logs two INFO lines per task ("received", "succeeded"); our delivery log line
# says what happened to the call, so these only cost CPU on the hot path.
for _name in ("celery.worker.strategy", "celery.app.trace"):
    logging.getLogger(_name).setLevel(logging.WARNING)
app.conf.imports = ("workers.tasks",)


@signals.worker_init.connect
def _check_configuration(**_: Any) -> None:
    """Refuse to start without credentials; warn when Redis could lose calls."""
    redact.add_to_handlers()
    try:
        settings.require_credentials()
    except ConfigError as exc:
        _refuse(str(exc))
    from dispatcher.health import redis_durability_warnings
    from dispatcher.redisconn import connect, refusal
    from dispatcher.replicas import shortfall

    client = connect(settings)
    try:
        # Every time this worker writes to Redis is on Redis's clock (dispatcher.clock).
        shared_clock.sync(client)
        for warning in redis_durability_warnings(client):
            log.warning(warning)
        replicas = shortfall(client, settings.redis_wait)
        if replicas:
            log.warning(replicas)
    except Exception as exc:  # Redis may be starting; Celery retries the connection itself
        why = refusal(exc)
        if why:  # a certificate or password that will never work: waiting cannot help
            _refuse(why)
        log.warning("could not check Redis settings: %s", type(exc).__name__)
    finally:
        client.close()


def _refuse(text: str) -> None:
    print(f"dispatcher: error: {redact.text(text)}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(2)  # Celery swallows exceptions raised by signal handlers


# The heartbeat that tells /healthz and /metrics this worker is alive: a daemon thread of
# its own with its own Redis client, so it shares nothing with the task threads.
_heartbeat: HeartbeatThread | None = None


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    if _heartbeat is not None:  # worker_ready fires once per consumer start
        return
    from dispatcher.redisconn import connect

    controller = getattr(sender, "controller", None)
    shared_clock.announce()  # measured at worker_init, before Celery set up its logging
    _heartbeat = HeartbeatThread(
        Heartbeats(connect(settings), settings.prefix),
        worker_name(getattr(sender, "hostname", None)),
        concurrency=getattr(controller, "concurrency", None),
    ).start()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
