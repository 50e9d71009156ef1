"""Read-back: settle calls whose send had an unknown outcome by reading the CAD's list.

The CAD has no idempotency key, so a call whose answer was lost (a read timeout, a
connection cut after the request was written, a 502/504 from a proxy, a worker that died
mid-send) may or may not be in the CAD. Sending it again blindly shows the dispatchers
the same emergency twice. Instead the call becomes ``verifying`` and, before anything is
re-sent, its server's emergency calls are read back (v1 ``GET_CALLS``, v2
``GET .../calls?type=1``) and searched for our tag, ``metaData.dispatcherCallId``:

    verifying ──read-back──> found:     delivered (the CAD's id), never sent again
                        └──> not found: back in line, in its place, sent again

One read-back settles every verifying call of that server at once. The scheduler starts
read-backs (`Starter`, run by `dispatcher.schedule.Pump`); a worker runs each one
(`Verifier.run`, the ``dispatcher.readback`` task). They have their own pace (v2: the
call list's own per-key budget; v1: a slot of the shared rate limiter), respect the
breaker (a read-back may be its probe) and are retried with backoff like calls.

Where the CAD cannot be read back (v1 without the Plus plan answers a permanent 400; on
v2 any permanent refusal), unknown outcomes are re-sent as before and counted as
possible duplicates, and stats say ``readback: "unavailable"``; a read-back is tried
again after `UNAVAILABLE_FOR_S`.

The window that remains: a call that a dispatcher converts or removes (or that its
``deleteAfterMinutes`` takes out of the list) between our send and the read-back is
not found, and is sent again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from dispatcher import clock as shared_clock
from dispatcher import scripts
from dispatcher.cad import CadClient
from dispatcher.call import TAG_ID
from dispatcher.errors import DeliveryError, PermanentError, RateLimited, RetryableError
from dispatcher.keys import DELIVERED_TTL_S, Keys
from dispatcher.lifecycle import LEASE_MARGIN_S
from dispatcher.policy import CircuitPolicy, RetryPolicy
from dispatcher.ratelimit import Flow
from dispatcher.redisconn import as_text
from dispatcher.settings import Settings

log = logging.getLogger("dispatcher.readback")

#: v2's call list has its own budget per key (5 a minute in our notes, 3 in the current
#: public docs): one read-back per server every 20 s stays within both.
V2_INTERVAL_S = 20.0
#: v1's read-backs take slots of the shared rate limiter; at most one per server this often.
V1_INTERVAL_S = 2.0
#: After a permanent refusal of the read-back, how long unknown outcomes are re-sent
#: without one before a read-back is tried again (the plan may have been upgraded).
UNAVAILABLE_FOR_S = 3600.0
#: A 429 to a read-back without Retry-After waits this long.
RATE_LIMITED_WAIT_S = 60.0
#: Fields compared when the CAD's list carries no metaData (v1 may omit it).
MATCH_FIELDS = ("caller", "location", "description")


@dataclass(frozen=True)
class Candidate:
    """A verifying call as the read-back compares it."""

    id: str
    call: dict[str, Any]


def match(candidates: list[Candidate], listed: Iterable[dict[str, Any]],
          taken: set[str]) -> dict[str, str]:
    """Which candidates the CAD's list holds: {our id: the CAD's id}.

    An entry carrying our tag matches that call only. An entry without any metaData
    (v1 may leave it out) matches a candidate whose caller, location and description
    are exactly the same, oldest candidate first, unless its CAD id is already one of
    our delivered calls (``taken``): two identical calls stay two calls.
    """
    by_id = {c.id: c for c in candidates}
    found: dict[str, str] = {}
    untagged: list[tuple[tuple[str, ...], str]] = []
    for entry in listed:
        cad_id = _cad_id(entry.get("callId"))
        if cad_id is None:
            continue
        meta = entry.get("metaData")
        if isinstance(meta, dict):
            tag = meta.get(TAG_ID)
            if isinstance(tag, str) and tag in by_id and tag not in found:
                found[tag] = cad_id
        elif meta is None and cad_id not in taken:
            untagged.append((_fields(entry), cad_id))
    for fields, cad_id in untagged:
        for c in candidates:  # oldest first
            if c.id not in found and _fields(c.call) == fields:
                found[c.id] = cad_id
                break
    return found


def _fields(obj: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(obj.get(name, "")) for name in MATCH_FIELDS)


def _cad_id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str) and str(value).strip():
        return str(value).strip()
    return None


class Starter:
    """Starts the read-backs that are due (the scheduler's step 7; one script a tick)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        flow = Flow.from_settings(settings)
        # A read-back's lease (and the breaker probe's, when it is the probe) is a send's.
        lease = repr(settings.request_deadline_s + LEASE_MARGIN_S)
        shared = 0.0 if settings.api_version == 2 else flow.interval_s
        self._args = [lease, repr(shared), repr(flow.max_wait_s), lease]
        self._keys = [Keys(settings.prefix).prefix]
        self._due = scripts.register(client, "readback_due.lua")

    def due(self, now: float) -> list[tuple[str, int, float]]:
        """Start what is due; returns (server, gen, start time) per read-back started."""
        return self.read(self._due(keys=self._keys, args=[repr(now), *self._args]))

    def queue(self, pipe: redis.client.Pipeline, now: float) -> None:
        """Queue `due` on a pipeline; `read` its result."""
        self._due(keys=self._keys, args=[repr(now), *self._args], client=pipe)

    @staticmethod
    def read(out: Any) -> list[tuple[str, int, float]]:
        """(server, gen, start time) per read-back the script started."""
        return [(as_text(out[i]), int(out[i + 1]), float(as_text(out[i + 2])))
                for i in range(0, len(out), 3)]


class Verifier:
    """Runs one server's read-back and settles its verifying calls (a worker's task)."""

    def __init__(self, client: redis.Redis, settings: Settings, cad: CadClient,
                 clock: Callable[[], float] = shared_clock.now,
                 sleep: Callable[[float], None] = time.sleep,
                 policy: RetryPolicy | None = None) -> None:
        self.client = client
        self.settings = settings
        self.cad = cad
        self.clock = clock
        self.sleep = sleep
        self.policy = policy or RetryPolicy()
        self.keys = Keys(settings.prefix)
        self.circuit = CircuitPolicy.from_settings(settings)
        self._settle = scripts.register(client, "readback_settle.lua")
        self._failed = scripts.register(client, "readback_failed.lua")

    def run(self, server: str, gen: int, start_at: float = 0.0) -> str:
        """Read the server's calls back and settle; returns what happened (logs, tests)."""
        wait = start_at - self.clock()
        if wait > 0:
            self.sleep(wait)  # v1: the slot the shared rate limiter gave it
        began = self.clock()
        candidates = self._candidates(server, began)
        try:
            listed = self.cad.read_calls(server or None)
        except DeliveryError as exc:
            return self._fail(server, gen, exc)
        taken = self._taken(listed)
        found = match(candidates, listed, taken)
        interval = V2_INTERVAL_S if self.settings.api_version == 2 else V1_INTERVAL_S
        res = self._settle(
            keys=[self.keys.prefix],
            args=[server, str(gen), repr(self.clock()), repr(began), repr(began + interval),
                  DELIVERED_TTL_S, *[x for pair in found.items() for x in pair]])
        if as_text(res[0]) == "stale":
            log.warning("read-back of server %s came after its lease; the next one settles",
                        _shown(server))
            return "stale"
        log.info("read-back of server %s: %s found in the CAD (not sent again), %s sent again",
                 _shown(server), as_text(res[0]), as_text(res[1]))
        return "settled"

    def _candidates(self, server: str, began: float) -> list[Candidate]:
        ids = [as_text(i) for i in self.client.zrange(self.keys.verifying_of(server), 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for call_id in ids:
            pipe.hmget(self.keys.call(call_id), "call", "verify_at", "state")
        out = []
        for call_id, (call, verify_at, state) in zip(ids, pipe.execute(), strict=True):
            if as_text(state) != "verifying" or not call:
                continue
            if float(as_text(verify_at) or 0) > began:
                continue
            try:
                out.append(Candidate(call_id, json.loads(as_text(call))))
            except ValueError:
                out.append(Candidate(call_id, {}))
        return out

    def _taken(self, listed: list[dict[str, Any]]) -> set[str]:
        """CAD ids in the list that are already ours (delivered calls), among untagged ones."""
        ids = [c for c in (_cad_id(e.get("callId")) for e in listed
                           if e.get("metaData") is None) if c is not None]
        if not ids:
            return set()
        known = self.client.mget([self.keys.cad(i) for i in ids])
        return {i for i, v in zip(ids, known, strict=True) if v is not None}

    def _fail(self, server: str, gen: int, exc: DeliveryError) -> str:
        now = self.clock()
        c = self.circuit
        if isinstance(exc, PermanentError):
            kind, next_at = "unavailable", now
        elif isinstance(exc, RateLimited):
            kind = "ratelimit"
            next_at = now + (exc.retry_after if exc.retry_after is not None
                             else RATE_LIMITED_WAIT_S)
        else:
            failures = int(as_text(self.client.hget(self.keys.readback_of(server),
                                                    "failures") or 0))
            after = exc.retry_after if isinstance(exc, RetryableError) else None
            kind, next_at = "error", now + self.policy.delay(failures + 1, after)
        outcome = as_text(self._failed(
            keys=[self.keys.prefix],
            args=[server, str(gen), repr(now), kind, repr(next_at), str(exc),
                  c.failure_threshold, repr(c.cooldown_s), repr(c.max_cooldown_s),
                  repr(UNAVAILABLE_FOR_S), "1" if self.settings.api_version == 1 else ""]))
        if outcome == "unavailable":
            log.warning("the CAD's list of calls cannot be read (%s): calls whose outcome is "
                        "unknown are sent again, and may be duplicates", exc)
        else:
            log.warning("read-back of server %s failed (%s); next in %.0fs", _shown(server),
                        exc, max(0.0, next_at - now))
        return outcome


def _shown(server: str) -> str:
    return server or "(default)"
