"""Holding a door's answer until the CAD has answered (``Prefer: wait=N``, RFC 7240).

A request that prefers to wait queues its calls with ``notify`` set; the scripts that
record an outcome (``delivered.lua``, ``dead.lua``, through ``_notify.lua``) then
PUBLISH the call's id on ``{prefix}:outcomes``. One `Outcomes` per web process holds a
pub/sub subscription to that channel in a thread of its own and wakes the requests
waiting on the id. A request registers its ids first, then reads their records once
(one pipelined read: an outcome recorded before it registered is found there), then
sleeps on its event until every call has an outcome or its N seconds are over, then
reads the records once more. Nothing polls Redis per request.

Where the subscription could have missed a message (it is down, or redis-py connected
it again), every waiting request is released to read its records at once, and no
request waits while it is down: each then gets the queued answer, as without the
header. At most `MAX_WAITING` requests wait at once per process (beyond that they are
answered at once); the web server has that many threads more than it would otherwise
(`dispatcher.http.server`), so waiting requests never hold up the others.

The answer itself (`v1_answer`, `v2_answer`): the CAD's own status and text once every
call of the request is delivered, or its refusal when the request's one call was
refused for good (dead letter ``rejected``); otherwise None, and the door gives its
usual queued answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from dispatcher.keys import Keys
from dispatcher.redisconn import as_text

log = logging.getLogger("dispatcher.web")

#: Most requests of one web process that wait at once; more are answered at once.
MAX_WAITING = 256
#: How often the listener looks up from its subscription to see whether it should stop.
LISTEN_TICK_S = 1.0
#: Pause before the listener subscribes again after Redis failed it.
RESUBSCRIBE_S = 1.0
#: States in which a call's outcome is known: the door stops waiting for it.
FINAL_STATES = frozenset({"delivered", "dead"})
_FIELDS = ("state", "cad_call_id", "status_code", "response", "reason")
_TEXT = "text/plain"
_JSON = "application/json"
_PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Outcome:
    """What a call's record says of its outcome (state "" when the record is gone)."""

    state: str
    cad_call_id: str = ""
    status_code: int | None = None
    response: str = ""
    reason: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def delivered(self) -> bool:
        return self.state == "delivered"

    @property
    def rejected(self) -> bool:
        """Refused for good by the CAD itself (the dead letter ``rejected``, with its answer)."""
        return (self.state == "dead" and self.reason == "rejected"
                and self.status_code is not None and 400 <= self.status_code < 500)


def read_outcomes(client: redis.Redis, prefix: str, ids: list[str]) -> list[Outcome]:
    """The outcome fields of every call in ``ids``, in one pipelined read."""
    pipe = client.pipeline(transaction=False)
    for call_id in ids:
        pipe.hmget(f"{prefix}:call:{call_id}", _FIELDS)
    return [_outcome(row) for row in pipe.execute()]


def _outcome(row: list[Any]) -> Outcome:
    state, cad_id, status, response, reason = (as_text(v) if v is not None else "" for v in row)
    return Outcome(state, cad_id, int(status) if status.isdigit() else None, response, reason)


@dataclass(eq=False)
class _Waiter:
    """One waiting request: its ids, those still without an outcome, and its wake-up."""

    ids: frozenset[str]
    remaining: set[str]
    event: threading.Event = field(default_factory=threading.Event)
    #: Outcomes heard (or a release) since the request last read the records.
    heard: int = 0


class Outcomes:
    """The web process's listener on ``{prefix}:outcomes`` and the requests waiting on it."""

    def __init__(self, client: redis.Redis, prefix: str, capacity: int = MAX_WAITING,
                 resubscribe_s: float = RESUBSCRIBE_S) -> None:
        self.client = client
        self.prefix = prefix
        self.channel = Keys(prefix).outcomes  # published by ``_notify.lua``
        self.capacity = capacity
        self.resubscribe_s = resubscribe_s
        self._lock = threading.Lock()
        self._by_id: dict[str, list[_Waiter]] = {}
        self._waiting = 0
        self._listening = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the requests' side ----------------------------------------------------------------

    def room(self) -> bool:
        """Whether a request may wait now (listening, and fewer than `capacity` wait)."""
        with self._lock:
            return self._listening and self._waiting < self.capacity

    def wait(self, ids: list[str], seconds: float) -> list[Outcome] | None:
        """The calls' outcomes once all are final or ``seconds`` passed; None: could not wait.

        None when the listener is down, `capacity` requests already wait, or Redis failed
        a read: the caller then answers as if nobody had asked to wait.
        """
        deadline = time.monotonic() + seconds
        waiter = self._register(ids)
        if waiter is None:
            return None
        try:
            outcomes = self._read(ids, waiter)
            while outcomes is not None and not all(o.final for o in outcomes):
                left = deadline - time.monotonic()
                if not self._listening or left <= 0 or not waiter.event.wait(left):
                    break  # nobody would wake it, or time is up with nothing new heard
                outcomes = self._read(ids, waiter)
            return outcomes
        finally:
            self._forget(waiter)

    def _read(self, ids: list[str], waiter: _Waiter) -> list[Outcome] | None:
        with self._lock:
            waiter.heard = 0
            waiter.event.clear()
        try:
            outcomes = read_outcomes(self.client, self.prefix, ids)
        except redis.RedisError as exc:
            log.debug("web: reading outcomes failed (%s); answering queued", type(exc).__name__)
            return None
        with self._lock:
            for call_id, outcome in zip(ids, outcomes, strict=True):
                if outcome.final:
                    waiter.remaining.discard(call_id)
            if waiter.heard and not waiter.remaining:
                waiter.event.set()
        return outcomes

    def _register(self, ids: Iterable[str]) -> _Waiter | None:
        with self._lock:
            if not self._listening or self._waiting >= self.capacity:
                return None
            waiter = _Waiter(frozenset(ids), set(ids))
            for call_id in waiter.ids:
                self._by_id.setdefault(call_id, []).append(waiter)
            self._waiting += 1
            return waiter

    def _forget(self, waiter: _Waiter) -> None:
        with self._lock:
            self._waiting -= 1
            for call_id in waiter.ids:
                waiters = self._by_id[call_id]
                waiters.remove(waiter)
                if not waiters:
                    del self._by_id[call_id]

    # -- the listener's side ---------------------------------------------------------------

    def start(self) -> Outcomes:
        """Subscribe in a thread of its own (daemon: it never holds the process up)."""
        self._thread = threading.Thread(target=self._listen, name="outcomes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(LISTEN_TICK_S + 2)

    def _listen(self) -> None:
        failing = False
        while not self._stopping.is_set():
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=LISTEN_TICK_S)
                    if message is not None:
                        self._heard(message)
                        if failing and self._listening:
                            failing = False
                            log.info("web: Prefer: wait is on again (subscribed to %s)",
                                     self.channel)
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                if not failing:
                    log.warning("web: Prefer: wait is off until Redis answers again (%s); "
                                "requests get the queued answer at once", type(exc).__name__)
                failing = True
            finally:
                self._release(listening=False)
                with contextlib.suppress(Exception):
                    pubsub.close()
            self._stopping.wait(self.resubscribe_s)

    def _heard(self, message: Mapping[str, Any]) -> None:
        kind = as_text(message.get("type", ""))
        if kind == "subscribe":
            # Subscribed, or subscribed again by redis-py after a broken connection: what
            # was published meanwhile is lost, so whoever waits reads the records now.
            self._release(listening=True)
        elif kind == "message":
            self._wake(as_text(message["data"]))

    def _wake(self, call_id: str) -> None:
        with self._lock:
            for waiter in self._by_id.get(call_id, ()):
                waiter.remaining.discard(call_id)
                waiter.heard += 1
                if not waiter.remaining:
                    waiter.event.set()

    def _release(self, *, listening: bool) -> None:
        """Every waiting request reads its records now; set whether requests may wait."""
        with self._lock:
            self._listening = listening
            for waiters in self._by_id.values():
                for waiter in waiters:
                    waiter.heard += 1
                    waiter.event.set()


# -- the answers -------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """The CAD's answer, to be given instead of the queued one."""

    status: int
    body: str
    mimetype: str


def v1_answer(outcomes: list[Outcome], api_version: int) -> Answer | None:
    """The seed door's answer: the CAD's text once all are delivered (the first call's,
    or ``EMERGENCY CALL ADDED ID: <id>`` when the CAD speaks v2), or its refusal."""
    refused = _refusal(outcomes)
    if refused is not None or not all(o.delivered for o in outcomes):
        return refused
    first = outcomes[0]
    if api_version == 2:
        if not first.cad_call_id.isdigit():
            return None
        return Answer(200, f"EMERGENCY CALL ADDED ID: {first.cad_call_id}", _TEXT)
    if first.status_code is None or not first.response:
        return None
    return Answer(first.status_code, first.response, _TEXT)


def v2_answer(outcome: Outcome, call: Mapping[str, Any], server_id: str) -> Answer | None:
    """The v2 door's answer: the CAD's JSON once delivered (built from its id when the
    kept text is not a JSON object: a v1 CAD's, or a long echo cut short), or its refusal."""
    refused = _refusal([outcome])
    if refused is not None or not outcome.delivered:
        return refused
    if _json_object(outcome.response) and outcome.status_code is not None:
        return Answer(outcome.status_code, outcome.response, _JSON)
    if not outcome.cad_call_id.isdigit():
        return None
    fields = {k: v for k, v in call.items() if k != "serverId"}
    body = {"callId": int(outcome.cad_call_id), "serverId": server_id, **fields}
    return Answer(200, json.dumps(body, ensure_ascii=False), _JSON)


def _refusal(outcomes: list[Outcome]) -> Answer | None:
    """The CAD's refusal of a request's one call (the CAD's own status and text)."""
    if len(outcomes) != 1 or not outcomes[0].rejected:
        return None
    o = outcomes[0]
    assert o.status_code is not None
    return Answer(o.status_code, o.response, _PROBLEM if _json_object(o.response) else _TEXT)


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
