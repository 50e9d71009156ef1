"""The producer: validate a call, record it durably, and put it in play.

`enqueue_call` is the public Python API (see the contract). The record is written by
one Lua script (idempotency key, record, backlog placement); when the system is idle
the same script pushes the call's first Celery message, in the same atomic step (the
fast path); otherwise the call waits in line and the scheduler releases it in its turn.
A message lost after that (a broker list flushed) is found by the scheduler's orphan
sweep, which gives the call a new one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from dispatcher import clock as shared_clock
from dispatcher.broker import Publisher
from dispatcher.call import Call, new_call_id
from dispatcher.communities import Communities, Live
from dispatcher.errors import ConfigError, InvalidCall, QueueFull, QueueUnavailable
from dispatcher.lifecycle import Enqueued, Lifecycle
from dispatcher.redact import holds_secret
from dispatcher.redisconn import QUEUE_WAIT_S, bounded, connect
from dispatcher.settings import Settings
from dispatcher.spool import Flusher, Spool

log = logging.getLogger(__name__)

#: Producer-side socket timeout (workers use the longer redisconn.SOCKET_TIMEOUT_S).
PRODUCER_SOCKET_TIMEOUT_S = 1.5


class Producer:
    """Enqueues calls; one per process is enough (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        publisher: Publisher | None = None,
        clock: Callable[[], float] = shared_clock.now,
        wait_s: float = QUEUE_WAIT_S,
        spool_dir: str | Path | None = None,
    ) -> None:
        self.settings = settings
        # A short socket timeout keeps the whole bounded wait near QUEUE_WAIT_S even when
        # Redis accepts connections but does not answer (stopped, swapping).
        self.client = client if client is not None else connect(
            settings, socket_timeout=PRODUCER_SOCKET_TIMEOUT_S)
        self.publisher = (publisher or Publisher(settings)).bind(self.client)
        self.lifecycle = Lifecycle(self.client, settings, clock=clock)
        self.clock = clock
        self.wait_s = wait_s
        folder = spool_dir or settings.spool_dir
        self.spool = Spool(Path(folder)) if folder else None
        #: The spool flusher last found the backlog cap reached.
        self._spool_full = False
        self.flusher = None if self.spool is None else Flusher(
            self.spool, self._flush_one, self._flush_error)
        if self.spool is not None and self.flusher is not None and len(self.spool):
            self.flusher.kick()  # calls spooled by an earlier run of this process
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._generation = 0
        self._of: dict[str, Producer] = {}
        #: The producer this one was made by (`of`): a community's own producer.
        self._parent: Producer | None = None

    def keys(self) -> list[str]:
        """Every community's API keys (current and previous), for refusing a call that
        carries one."""
        if self.settings.communities_file:
            with self._lock:
                found = list(self._served())
        else:
            found = []
        secrets = [self.settings.api_key, self.settings.previous_key]
        for c in found:
            secrets += [c.settings.api_key, c.previous_key]
        return [s.reveal() for s in secrets if s is not None]

    def live(self) -> Live:
        """The communities of this producer's process as they change (one `Live` per
        process: the door and the page share it)."""
        if self._parent is not None:
            return self._parent.live()
        if self._live is None:
            self._live = Live(self.settings, self.client)
        return self._live

    def _served(self) -> Communities:
        """The communities now (the file is read again when it changes or an operator
        runs `dispatcher reload`; the communities' producers are then made anew)."""
        live = self.live()
        served = live.current()
        if live.generation != self._generation:
            self._of.clear()
            self._generation = live.generation
        return served

    def home(self) -> Producer:
        """The default community's producer (the first community's when there is no
        default): where what belongs to no community (an unreadable inbox entry) goes."""
        try:
            return self.of(None)
        except InvalidCall:
            with self._lock:
                first = self._served().names[0]
            return self.of(first)

    def of(self, community: str | None) -> Producer:
        """The producer of ``community`` (None or '': the default one), sharing this
        one's Redis client; InvalidCall when there is no such community."""
        if self._parent is not None:  # already one community's: it, or another's
            if community in (None, "", self.settings.community):
                return self
            return self._parent.of(community)
        if not self.settings.communities_file:
            if community in (None, "", self.settings.community):
                return self
            raise InvalidCall(f"unknown community {community!r} (this deployment has one, "
                              "'default'; DISPATCHER_COMMUNITIES names more)")
        with self._lock:
            try:
                chosen = self._served().get(community)
            except ConfigError as exc:
                raise InvalidCall(str(exc)) from None
            if chosen.settings == self.settings:
                return self
            child = self._of.get(chosen.name)
            if child is None:
                folder = self.spool.path.parent / chosen.name if self.spool is not None else None
                child = Producer(chosen.settings, self.client,
                                 self.publisher.sharing(chosen.settings), self.clock,
                                 self.wait_s, folder)
                child._parent = self
                self._of[chosen.name] = child
            return child

    def enqueue(
        self, call: Call, source: str = "api", take_from: tuple[str, str] | None = None,
        *, notify: bool = False,
    ) -> str:
        """Enqueue a validated call; returns its id ("" if ``take_from`` was already gone).

        Raises QueueUnavailable when Redis cannot take the record within the bounded wait
        (or, with DISPATCHER_REDIS_WAIT, its replicas do not confirm it), QueueFull when
        DISPATCHER_MAX_BACKLOG calls are already waiting (never spooled).
        ``notify``: someone waits for the outcome (the door's ``Prefer: wait``), so it is
        published on ``{prefix}:outcomes``; a spooled call is not waited for.
        """
        self._refuse_secret(call)
        self._measure_clock()
        now = self.clock()
        stamped = call.with_envelope(new_call_id(now), now)
        if self.spool is None or take_from is not None:
            return self._record(stamped, source, take_from, self.wait_s, notify).call_id
        if len(self.spool):  # keep order: behind what is already spooled
            if self._spool_full:
                # The flusher found the cap reached: spooling more would go round it.
                raise queue_full(self.settings.max_backlog)
            return self._to_spool(stamped, source)
        try:
            return self._record(stamped, source, None, self.wait_s).call_id
        except QueueUnavailable as exc:
            log.warning("queue unavailable (%s); call spooled locally", exc)
            return self._to_spool(stamped, source)

    def enqueue_ticketed(self, call: Call, source: str = "api", *, notify: bool = False
                         ) -> tuple[str, int | None]:
        """Record a call in Redis now (never spooled): (its id, its ticket).

        The ticket (`dispatcher.tickets`) is the number the CAD's own clients accept; a
        door that answers in the CAD's shape gives it. Raises as `enqueue`, and
        QueueUnavailable instead of spooling.
        """
        self._refuse_secret(call)
        self._measure_clock()
        now = self.clock()
        result = self._record(call.with_envelope(new_call_id(now), now), source, None,
                              self.wait_s, notify)
        return result.call_id, result.ticket

    def _measure_clock(self) -> None:
        """Before this process's first enqueue: measure its clock against Redis's, so the
        call's time agrees with every other host's (`dispatcher.clock`)."""
        if not shared_clock.synced():
            shared_clock.sync_if_due(self.client)

    def _refuse_secret(self, call: Call) -> None:
        # Storing a call that carries the API key would put the key in Redis, in dead
        # letters and in status output; no real 911 call needs it.
        key = self.settings.api_key.reveal() if self.settings.api_key else ""
        if len(key) >= 8 and holds_secret([call.to_cad(), call.idempotency_key], key):
            raise InvalidCall("the call contains the API key; it was not queued")

    def _to_spool(self, stamped: Call, source: str) -> str:
        assert self.spool is not None and self.flusher is not None
        if stamped.idempotency_key is None:
            # The flush may be retried after a crash; this key makes it record once.
            stamped = replace(stamped, idempotency_key=f"spool:{stamped.id}")
        self.spool.push({"call": stamped.to_dict(), "source": source})
        self.flusher.kick()
        return stamped.id

    def _flush_one(self, entry: dict[str, Any]) -> None:
        self._record(Call.from_dict(entry["call"]), str(entry.get("source", "api")), None, 0.5)
        if self._spool_full:
            self._spool_full = False
            log.warning("spool flush resumed: the backlog is below DISPATCHER_MAX_BACKLOG")

    def _flush_error(self, exc: Exception) -> None:
        if isinstance(exc, QueueFull):
            # Already accepted: the calls stay on disk and the flusher tries again.
            first, self._spool_full = not self._spool_full, True
            if first:
                log.warning("spool flush waits: %s; %d call(s) stay spooled", exc,
                            self.pending_spooled())
            return
        self._spool_full = False  # Redis is down again: the spool is for exactly that
        log.debug("spool flush waits for Redis (%s)", type(exc).__name__)

    def pending_spooled(self) -> int:
        """Calls waiting in the local spool (0 without a spool)."""
        return len(self.spool) if self.spool is not None else 0

    def _record(self, stamped: Call, source: str, take_from: tuple[str, str] | None,
                wait_s: float, notify: bool = False) -> Enqueued:
        # The first message is built up front (gen 1) so the script can push it with
        # the record, atomically; it is simply dropped when the call has to wait.
        message = (self.publisher.queue_key, self.publisher.message(stamped.id, 1))
        result = bounded(lambda: self.lifecycle.enqueue(stamped, message, source, take_from,
                                                        notify=notify), wait_s)
        shared_clock.sync_if_due(self.client)  # Redis just answered: measure every minute
        if result.full:
            raise queue_full(self.settings.max_backlog, result.waiting)
        return result

    def enqueue_many(
        self, calls: Iterable[Call], source: str = "api",
        take_from: Iterable[tuple[str, str] | None] | None = None,
    ) -> list[str]:
        """Enqueue several calls in order in one round trip; returns their ids.

        Each call is still its own atomic script (pipelined, not a transaction): a retry
        after a broken connection finds the calls already recorded and records none twice.
        ``take_from`` gives, per call, the inbox entry it consumes ("" ids for entries
        another bridge took first). When the backlog cap is reached the calls from the
        first refused one on are not recorded (a marker key keeps the rest of the batch
        refused even if room frees meanwhile); QueueFull is raised with ``accepted``,
        the ids of the batch ("" for each call not recorded).
        """
        batch = list(calls)
        if not batch:
            return []
        takes = list(take_from) if take_from is not None else [None] * len(batch)
        if self.spool is not None and any(t is None for t in takes):
            return [self.enqueue(c, source, t) for c, t in zip(batch, takes, strict=True)]
        for call in batch:
            self._refuse_secret(call)
        self._measure_clock()
        now = self.clock()
        # A microsecond apart, so the batch keeps its order in line (held is by time).
        stamped = [c.with_envelope(new_call_id(now), now + i * 1e-6)
                   for i, c in enumerate(batch)]
        messages = [(self.publisher.queue_key, self.publisher.message(c.id, 1))
                    for c in stamped]

        # Once the cap refuses one call of the batch, the later ones are refused too.
        marker = self.lifecycle.keys.batch(stamped[0].id)

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for call, take, message in zip(stamped, takes, messages, strict=True):
                self.lifecycle.enqueue_pipelined(pipe, call, message, source, take, marker)
            wait = self.lifecycle.wait
            if wait is None:
                return list(pipe.execute())
            replies, confirmed = wait.execute(pipe)  # DISPATCHER_REDIS_WAIT
            if not wait.confirmed(confirmed):
                raise wait.refusal(confirmed)
            return replies

        replies = bounded(run, self.wait_s)
        shared_clock.sync_if_due(self.client)
        ids = []
        refused: Enqueued | None = None
        for reply in replies:
            result = self.lifecycle.enqueued_from(reply)
            if result.full:
                refused = refused or result
            ids.append(result.call_id)
        if refused is not None:
            exc = queue_full(self.settings.max_backlog, refused.waiting)
            exc.accepted = ids  # type: ignore[attr-defined]
            raise exc
        return ids

    def close(self) -> None:
        if self.flusher is not None:
            self.flusher.stop()
        self.publisher.close()
        self.client.close()


def queue_full(cap: int, waiting: int | None = None) -> QueueFull:
    """The one-line QueueFull every producer raises."""
    count = f" ({waiting} waiting)" if waiting is not None else ""
    return QueueFull(f"the queue is full: {cap} calls wait for delivery{count}, the cap "
                     "DISPATCHER_MAX_BACKLOG; the call was not queued, try again later")


_default: Producer | None = None
_default_lock = threading.Lock()


def default_producer() -> Producer:
    """The process-wide producer, built from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Producer(Settings.from_env())
        return _default


def enqueue_call(
    caller: str,
    location: str,
    description: str,
    postal: str | int | None = None,
    plate: str | None = None,
    server_id: str | int | None = None,
    is_emergency: bool = True,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    *,
    extra: Mapping[str, Any] | None = None,
    producer: Producer | None = None,
    community: str | None = None,
) -> str:
    """Queue one 911 call for the CAD and return its id.

    Raises InvalidCall (naming the field), QueueUnavailable (after a bounded wait) or
    QueueFull (DISPATCHER_MAX_BACKLOG calls already wait; nothing was queued).
    The same ``idempotency_key`` always yields the same id and one CAD call.
    ``extra`` holds further top-level members of the call object under their JSON names
    (``extra={"coords": {"x": 1.0, "y": 2.0}}``); the CAD gets them as given
    (`Call.create`). ``community`` names the community (DISPATCHER_COMMUNITIES) when
    there are several; None: the default one. An unknown community is InvalidCall.
    """
    target = (producer or default_producer()).of(community)
    call = Call.create(
        caller=caller, location=location, description=description, postal=postal,
        plate=plate, server_id=server_id, is_emergency=is_emergency, metadata=metadata,
        idempotency_key=idempotency_key, extra=extra,
    )
    return target.enqueue(call)
