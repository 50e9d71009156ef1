"""A call's life in Redis: enqueue, claim, and the three outcomes of a send.

    enqueue ──> queued (Celery message out) ──claim──> sending ──> delivered
       │           ▲                              │  │                  ▲ found
       └──> held ──┘ (released oldest first       │  ├──> verifying ────┘ (read-back;
            by `dispatcher.schedule`)             │  │    (answer lost,     not found:
                    ▲                             │  │     lease lost)      back to held)
                    │                             │  ├──> scheduled (backoff) ──due──> held
                    │                             │  └──> dead (permanent, expired)
                    └── breaker open, rate slot too far, 429 pause

Each arrow is one Lua script in ``dispatcher/lua/`` (enqueue, claim, delivered, retry,
dead, unclaim here; the schedule's in `dispatcher.schedule`), atomic, so a process
killed at any moment leaves the call in exactly one place. The breaker
(`dispatcher.circuit`) and the rate limiter (`dispatcher.ratelimit`) are checked inside
those scripts. A message carries the call's generation (``gen``); only the message of
the current generation may claim it, so a redelivered or duplicated Celery message is
dropped harmlessly. A delivered call is never claimed again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from dispatcher import clock as shared_clock
from dispatcher import scripts
from dispatcher.call import Call
from dispatcher.deadletters import DeadReason
from dispatcher.errors import InvalidCall
from dispatcher.keys import DELIVERED_TTL_S, IDEMPOTENCY_TTL_S, Keys
from dispatcher.policy import VERIFY_AFTER_S, CircuitPolicy
from dispatcher.ratelimit import STALE_SLOT_S, Flow, RateLimit
from dispatcher.redisconn import as_text
from dispatcher.replicas import ReplicaWait
from dispatcher.settings import Settings
from dispatcher.telemetry import bucket_for

#: A claimed call's lease beyond the request deadline; a worker that dies mid-send
#: gives the call back to the backlog when the lease ends.
LEASE_MARGIN_S = 15.0

EnqueueKind = Literal["pushed", "held", "duplicate", "gone", "full"]
"""What `Lifecycle.enqueue` did: ``pushed`` (recorded, its first message pushed in the
same step), ``held`` (recorded, waiting its turn in line), ``duplicate`` (already
recorded: ``call_id`` is the first one's), ``gone`` (the inbox entry was taken by another
bridge: nothing recorded) or ``full`` (the backlog cap refused it: nothing recorded)."""

#: What `Lifecycle.claim` found: ``claimed`` (send it), ``held`` (breaker, 429 pause or
#: rate; back in line), ``stale`` (another generation's message), ``expired`` (a dead
#: letter now), ``missing`` (no record) or ``invalid`` (the stored call no longer
#: validates: a dead letter now).
ClaimKind = Literal["claimed", "held", "stale", "expired", "missing", "invalid"]

#: What `Lifecycle.delivered` did: ``delivered``, ``already`` (recorded before) or
#: ``missing`` (no record).
DeliveredOutcome = Literal["delivered", "already", "missing"]
#: What `Lifecycle.retry` did: ``scheduled`` (backoff), ``held`` (a 429 pause or the
#: breaker opened: back in line), ``verifying`` (an unknown outcome: its server's
#: read-back decides), ``cancelled`` (taken back meanwhile; the CAD did not create it)
#: or ``stale`` (the call is no longer this send's).
RetryOutcome = Literal["scheduled", "held", "verifying", "cancelled", "stale"]
#: What `Lifecycle.unclaim` did: ``held`` (back in line), ``cancelled`` (taken back
#: meanwhile: never sent) or ``stale``.
UnclaimOutcome = Literal["held", "cancelled", "stale"]
#: What `Lifecycle.dead` did: ``dead`` (a dead letter now), ``cancelled`` (taken back
#: meanwhile, and the CAD refused it: nothing to remove) or ``stale``.
DeadOutcome = Literal["dead", "cancelled", "stale"]
#: What `Lifecycle.removed` did: ``removed`` or ``stale``.
RemovedOutcome = Literal["removed", "stale"]


@dataclass(frozen=True)
class Enqueued:
    """Result of `Lifecycle.enqueue` (see `EnqueueKind`)."""

    kind: EnqueueKind
    call_id: str = ""
    #: Generation of the message pushed (1), 0 when none was.
    gen: int = 0
    #: Calls waiting when the backlog cap refused this one.
    waiting: int = 0
    #: The call's ticket (`dispatcher.tickets`); None for a call recorded before tickets.
    ticket: int | None = None

    @property
    def full(self) -> bool:
        return self.kind == "full"


@dataclass(frozen=True)
class Claim:
    """Result of `Lifecycle.claim` (see `ClaimKind`)."""

    kind: ClaimKind
    call: Call | None = None
    failures: int = 0
    wait_s: float = 0.0
    detail: str = ""
    #: When the rate limiter's slot for this call begins (absolute time).
    start_at: float = 0.0
    #: ``remove``: this claim is the removal of a delivered call from the CAD
    #: (`dispatcher.takeback`), whose CAD id is `cad_call_id`; "" : send the call.
    op: str = ""
    cad_call_id: str = ""

    @property
    def removal(self) -> bool:
        return self.op == "remove"


class Lifecycle:
    """The state-changing scripts of one call, bound to a Redis client."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        circuit: CircuitPolicy | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.circuit = circuit or CircuitPolicy.from_settings(settings)
        self.flow = Flow.from_settings(settings)
        self.clock = clock or shared_clock.now
        # The send gate times sends by Redis's own clock unless a test gives its own.
        self.rate = RateLimit(client, self.flow, settings.prefix, clock)
        self.lease_s = settings.request_deadline_s + LEASE_MARGIN_S
        self._prefix = [self.keys.prefix]
        #: DISPATCHER_REDIS_WAIT: enqueues and claims wait for replicas (None: they don't).
        self.wait = ReplicaWait.for_prefix(settings.redis_wait, settings.prefix)
        self._enqueue = scripts.register(client, "enqueue.lua")
        self._claim = scripts.register(client, "claim.lua")
        self._delivered = scripts.register(client, "delivered.lua")
        self._retry = scripts.register(client, "retry.lua")
        self._dead = scripts.register(client, "dead.lua")
        self._unclaim = scripts.register(client, "unclaim.lua")
        self._removed = scripts.register(client, "removed.lua")

    def enqueue(
        self, call: Call, message: tuple[str, str], source: str = "api",
        take_from: tuple[str, str] | None = None, *, notify: bool = False,
    ) -> Enqueued:
        """Record a call (idempotently) and put it in play or in line.

        ``message=(queue_key, json)`` is the call's first Celery message (gen 1), pushed
        in the same atomic step when the call may go at once. ``take_from=(list_key,
        raw)`` removes that entry from that list in the same step; if it is no longer
        there (another bridge took it), nothing is recorded (``gone``). ``notify``: a door
        waits for the outcome (``Prefer: wait``), so the outcome scripts publish it.
        With DISPATCHER_REDIS_WAIT, raises QueueUnavailable unless the replicas confirm.
        """
        keys, args = self._enqueue_args(call, source, take_from, message, notify)
        if self.wait is None:
            return _enqueued(self._enqueue(keys=keys, args=args))
        pipe = self.client.pipeline(transaction=False)
        self._enqueue(keys=keys, args=args, client=pipe)
        replies, confirmed = self.wait.execute(pipe)
        if not self.wait.confirmed(confirmed):
            raise self.wait.refusal(confirmed)
        return _enqueued(replies[0])

    def enqueue_pipelined(
        self, pipe: redis.client.Pipeline, call: Call, message: tuple[str, str], source: str,
        take_from: tuple[str, str] | None = None, batch: str = "", *, notify: bool = False,
    ) -> None:
        """Queue the same script on a pipeline; parse its reply with `enqueued_from`.

        ``batch`` names a marker key shared by the calls of one batch: once one is refused
        at the backlog cap, the later ones are too (the batch keeps its order).
        """
        keys, args = self._enqueue_args(call, source, take_from, message, notify)
        self._enqueue(keys=[*keys, batch], args=args, client=pipe)

    @staticmethod
    def enqueued_from(reply: Any) -> Enqueued:
        return _enqueued(reply)

    def _enqueue_args(
        self, call: Call, source: str, take_from: tuple[str, str] | None,
        message: tuple[str, str], notify: bool = False,
    ) -> tuple[list[str], list[Any]]:
        inbox, entry = take_from or ("", "")
        queue, body = message
        return ([self.keys.prefix, inbox, queue],
                [call.id, json.dumps(call.to_cad(), ensure_ascii=False), repr(call.enqueued_at),
                 call.idempotency_key or "", IDEMPOTENCY_TTL_S, source, *self.flow.argv(),
                 entry, body, self.settings.max_backlog, "1" if notify else "",
                 len(call.unknown_fields), "" if call.is_emergency else "1"])

    def claim(self, call_id: str, gen: int) -> Claim:
        """Take a queued call for sending, or say why not (atomic with breaker and rate).

        With DISPATCHER_REDIS_WAIT, a claim the replicas do not confirm is given back
        (``held``): a replica promoted after a failover must know the call is being sent.
        """
        now = self.clock()
        args = [call_id, str(gen), repr(now), repr(self.lease_s),
                repr(self.settings.max_age_s or 0), repr(self.lease_s),
                repr(self.flow.interval_s), repr(self.flow.max_wait_s),
                repr(self.flow.limit_gap_s), repr(STALE_SLOT_S)]
        if self.wait is None:
            res = self._claim(keys=self._prefix, args=args)
        else:
            pipe = self.client.pipeline(transaction=False)
            self._claim(keys=self._prefix, args=args, client=pipe)
            replies, confirmed = self.wait.execute(pipe)
            res = replies[0]
            if not self.wait.confirmed(confirmed) and as_text(res[0]) == "claimed":
                self.unclaim(call_id, gen)
                return Claim("held", detail=f"replicas: {confirmed} of {self.wait.replicas} "
                                            "confirmed the claim")
        kind = cast(ClaimKind, as_text(res[0]))
        if kind != "claimed":
            return Claim(kind, detail=as_text(res[1]) if len(res) > 1 and res[1] else "")
        try:
            call = Call.parse(json.loads(as_text(res[1])))
            call = call.with_envelope(call_id, float(as_text(res[4])))
        except (InvalidCall, ValueError) as exc:
            # A record that no longer validates (limits tightened by an upgrade, a hand
            # edit) would loop forever; it becomes a dead letter an operator can see.
            self.dead(call_id, gen, "invalid", None, None, f"stored call is not valid: {exc}")
            return Claim("invalid", detail=str(exc))
        wait = float(as_text(res[3]))
        return Claim(kind, call, int(as_text(res[2]) or 0), wait, start_at=now + wait,
                     op=as_text(res[5]), cad_call_id=as_text(res[6]))

    def delivered(self, call_id: str, cad_call_id: str | None, status: int, response: str,
                  elapsed_s: float | None = None) -> DeliveredOutcome:
        """Record a delivery; always wins, whoever else touched the call meanwhile."""
        return cast(DeliveredOutcome, as_text(self._delivered(
            keys=self._prefix,
            args=[call_id, repr(self.clock()), cad_call_id or "", status,
                  response, DELIVERED_TTL_S, *_latency(elapsed_s)]
        )))

    def removed(self, call_id: str, gen: int, status: int, response: str) -> RemovedOutcome:
        """Record that the CAD no longer has a call we took back (its removal went through)."""
        return cast(RemovedOutcome, as_text(self._removed(
            keys=self._prefix,
            args=[call_id, str(gen), repr(self.clock()), status, response, DELIVERED_TTL_S])))

    def retry(
        self, call_id: str, gen: int, due: float, error: str, status: int | None,
        response: str | None, rate_limited: bool = False, retry_after: float | None = None,
        elapsed_s: float | None = None, ambiguous_on: str | None = None,
    ) -> RetryOutcome:
        """Record a retryable failure: schedule (backoff) or, for a 429, pause and hold.

        ``ambiguous_on`` (the call's own server id, '' for none): the answer was lost
        after the request was written, so the call waits for that server's read-back
        (``verifying``) instead of a blind re-send (`dispatcher.readback`).
        """
        c = self.circuit
        now = self.clock()
        pause = retry_after if retry_after is not None else self.flow.pause_s
        kind = ("ratelimit" if rate_limited else
                "ambiguous" if ambiguous_on is not None else "error")
        return cast(RetryOutcome, as_text(self._retry(
            keys=self._prefix,
            args=[call_id, str(gen), repr(now), repr(due), error,
                  "" if status is None else status, response or "", kind, repr(pause),
                  c.failure_threshold, repr(c.cooldown_s), repr(c.max_cooldown_s),
                  *_latency(elapsed_s), ambiguous_on or "", repr(now + VERIFY_AFTER_S)]
        )))

    def unclaim(self, call_id: str, gen: int) -> UnclaimOutcome:
        """Give a claimed call back to the line unsent (no attempt counted)."""
        now = repr(self.clock())
        return cast(UnclaimOutcome,
                    as_text(self._unclaim(keys=self._prefix, args=[call_id, str(gen), now])))

    def dead(
        self, call_id: str, gen: int, reason: DeadReason, status: int | None,
        response: str | None, error: str, elapsed_s: float | None = None,
    ) -> DeadOutcome:
        """Record a permanent failure: the call becomes a dead letter."""
        return cast(DeadOutcome, as_text(self._dead(
            keys=self._prefix,
            args=[call_id, str(gen), repr(self.clock()), reason,
                  "" if status is None else status, response or "", error,
                  *_latency(elapsed_s)]
        )))


def _latency(elapsed_s: float | None) -> tuple[str, str]:
    """Histogram bucket and duration for the outcome scripts ("" = nothing to record)."""
    if elapsed_s is None:
        return ("", "0")
    return (bucket_for(elapsed_s), repr(elapsed_s))


def _enqueued(res: Any) -> Enqueued:
    kind = cast(EnqueueKind, as_text(res[1]))
    if kind == "full":
        return Enqueued(kind, waiting=int(as_text(res[2])))
    ticket = as_text(res[2]) if len(res) > 2 else ""
    return Enqueued(kind, as_text(res[0]), 1 if kind == "pushed" else 0,
                    ticket=int(ticket) if ticket.isdigit() else None)
