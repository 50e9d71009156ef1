"""The read side: one call's record, and the counts behind `dispatcher stats`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis

from dispatcher import circuit, ratelimit
from dispatcher import clock as shared_clock
from dispatcher.keys import Keys
from dispatcher.redisconn import as_text

#: States as users see them: held and sending are details of queued.
PUBLIC_STATE = {
    "held": "queued",
    "queued": "queued",
    "sending": "queued",
    "scheduled": "scheduled",
    "verifying": "verifying",
    "delivered": "delivered",
    "dead": "dead",
    "cancelled": "cancelled",
    "removed": "removed",
}


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def _f(value: str | None) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _i(value: str | None) -> int | None:
    number = _f(value)
    return None if number is None else int(number)


@dataclass(frozen=True)
class CallRecord:
    """One call as stored: its payload, where it is, and what happened to it."""

    id: str
    call: dict[str, Any]
    state: str
    attempts: int
    last_error: str | None
    status_code: int | None
    response: str | None
    reason: str | None
    cad_call_id: str | None
    enqueued_at: float | None
    delivered_at: float | None
    dead_at: float | None
    due: float | None
    replays: int
    replayed_at: float | None
    source: str | None
    idempotency_key: str | None
    #: The raw text of an inbox entry that was not a valid call (reason ``invalid``).
    raw: str | None = None
    #: ``remove``: the call is being removed from the CAD (`dispatcher.takeback`).
    op: str = ""
    #: Taken back while being sent: removed or cancelled once its outcome is known.
    remove_requested: bool = False
    #: What a dead letter is of: ``call`` (sending it) or ``removal`` (removing it).
    kind: str = "call"
    cancelled_at: float | None = None
    removed_at: float | None = None
    #: The call's ticket (`dispatcher.tickets`); None for a call recorded before tickets.
    ticket: int | None = None

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes] | dict[str, str]) -> CallRecord:
        h = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
             else v) for k, v in raw.items()}
        try:
            call = json.loads(h.get("call") or "{}")
        except ValueError:
            call = {}
        return cls(
            id=h.get("id", ""),
            call=call,
            state=h.get("state", "unknown"),
            attempts=_i(h.get("attempts")) or 0,
            last_error=h.get("last_error") or None,
            status_code=_i(h.get("status_code")),
            response=h.get("response") or None,
            reason=h.get("reason") or None,
            cad_call_id=h.get("cad_call_id") or None,
            enqueued_at=_f(h.get("enqueued_at")),
            delivered_at=_f(h.get("delivered_at")),
            dead_at=_f(h.get("dead_at")),
            due=_f(h.get("due")) if h.get("state") == "scheduled" else None,
            replays=_i(h.get("replays")) or 0,
            replayed_at=_f(h.get("replayed_at")),
            source=h.get("source") or None,
            idempotency_key=h.get("idempotency_key") or None,
            raw=h.get("raw") or None,
            op=h.get("op") or "",
            remove_requested=h.get("remove_requested") == "1",
            kind=h.get("kind") or "call",
            cancelled_at=_f(h.get("cancelled_at")),
            removed_at=_f(h.get("removed_at")),
            ticket=int(h["ticket"]) if (h.get("ticket") or "").isdigit() else None,
        )

    @property
    def status(self) -> str:
        if self.op == "remove" and self.state != "dead":
            return "removing"
        return PUBLIC_STATE.get(self.state, self.state)

    def to_json(self, default_server_id: str | None = None) -> dict[str, Any]:
        """The record for output (`--json`), with the contract's field names."""
        # An invalid inbox entry never became a call: null, its raw text is under "raw".
        call: dict[str, Any] | None = dict(self.call) if self.call else None
        if call is not None and "serverId" not in call and default_server_id is not None:
            call = {"serverId": default_server_id, **call}
        return {
            "id": self.id,
            "ticket": self.ticket,
            "status": self.status,
            "state": self.state,
            "call": call,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "reason": self.reason,
            "status_code": self.status_code,
            "response": self.response,
            "cad_call_id": self.cad_call_id,
            "enqueued_at": iso(self.enqueued_at),
            "delivered_at": iso(self.delivered_at),
            "dead_at": iso(self.dead_at),
            "next_attempt_at": iso(self.due),
            "replays": self.replays,
            "replayed_at": iso(self.replayed_at),
            "source": self.source,
            "idempotency_key": self.idempotency_key,
            "kind": self.kind,
            "remove_requested": self.remove_requested,
            "cancelled_at": iso(self.cancelled_at),
            "removed_at": iso(self.removed_at),
            **({"raw": self.raw} if self.raw is not None else {}),
        }


#: What a list of calls shows (the page's dead-letter table): never the raw text of an
#: invalid entry, which may be 64 KiB, nor the history.
DISPLAY_FIELDS = ("id", "call", "state", "attempts", "last_error", "status_code", "response",
                  "reason", "enqueued_at", "dead_at", "replays", "kind", "op")


class Records:
    """Reads call records and system counts."""

    def __init__(self, client: redis.Redis, prefix: str = "dispatcher",
                 clock: Callable[[], float] = shared_clock.now) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.clock = clock

    def get(self, call_id: str) -> CallRecord | None:
        raw = self.client.hgetall(self.keys.call(call_id))
        return CallRecord.from_hash(raw) if raw else None  # type: ignore[arg-type]

    def get_many(self, ids: list[str]) -> list[CallRecord]:
        pipe = self.client.pipeline(transaction=False)
        for call_id in ids:
            pipe.hgetall(self.keys.call(call_id))
        return [CallRecord.from_hash(raw) for raw in pipe.execute() if raw]

    def display_many(self, ids: list[str]) -> list[CallRecord]:
        """Like get_many, with `DISPLAY_FIELDS` only (one HMGET per call)."""
        pipe = self.client.pipeline(transaction=False)
        for call_id in ids:
            pipe.hmget(self.keys.call(call_id), DISPLAY_FIELDS)
        return [CallRecord.from_hash({f: as_text(v) for f, v in
                                      zip(DISPLAY_FIELDS, values, strict=True) if v is not None})
                for values in pipe.execute() if any(v is not None for v in values)]

    def stats(self) -> dict[str, Any]:
        """The contract's stats keys, and a few more."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        for name in (k.held, k.queued, k.scheduled, k.inflight, k.verifying, k.dead):
            pipe.zcard(name)
        pipe.zrange(k.pending, 0, 0, withscores=True)
        pipe.hgetall(k.counters)
        pipe.hgetall(k.circuit)
        pipe.hget(k.rate, "pause_until")
        pipe.hmget(k.readback, "unavailable_until", "since", "reason")
        (held, queued, scheduled, inflight, verifying, dead, oldest, counters, breaker_hash,
         pause, readback) = pipe.execute()
        now = self.clock()
        counters = {key.decode(): int(value) for key, value in counters.items()}
        breaker = circuit.view(breaker_hash, now)  # one round trip for all of stats
        pause_until = ratelimit.pause_end(pause)
        unavailable = (_f(as_text(readback[0])) or 0.0) > now
        return {
            "queued": held + queued,
            "scheduled": scheduled,
            "in_flight": inflight,
            "dead": dead,
            "delivered": counters.get("delivered", 0),
            "oldest_age_s": round(max(0.0, now - oldest[0][1]), 3) if oldest else None,
            "circuit": breaker.state,
            "verifying": verifying,
            # Whether unknown outcomes are checked in the CAD's list before a re-send.
            "readback": "unavailable" if unavailable else "available",
            "readback_unavailable_since": iso(_f(as_text(readback[1]))) if unavailable else None,
            "readback_unavailable_reason": as_text(readback[2]) if unavailable else None,
            "verified_found": counters.get("verified_found", 0),
            "verified_missing": counters.get("verified_missing", 0),
            "possible_duplicates": counters.get("possible_duplicates", 0),
            "cancelled": counters.get("cancelled", 0),
            "removed": counters.get("removed", 0),
            "enqueued": counters.get("enqueued", 0),
            "retried": counters.get("retried", 0),
            "rate_limited": counters.get("rate_limited", 0),
            "rate_limit_pause_s": round(max(0.0, pause_until - now), 3),
            "dead_by_reason": {key[5:]: v for key, v in counters.items()
                               if key.startswith("dead:")},
            # Invalid inbox entries beyond DISPATCHER_MAX_INVALID, summarised and dropped.
            "invalid_summarised": counters.get("invalid_summarised", 0),
            "cad": {
                "last_success_at": iso(breaker.last_success_at),
                "last_failure_at": iso(breaker.last_failure_at),
                "last_error": breaker.last_error,
                "consecutive_failures": breaker.failures,
            },
        }
