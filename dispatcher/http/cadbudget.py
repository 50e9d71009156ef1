"""The CAD's rate budgets as passed-through requests see them: what is left after ours.

The CAD limits requests per API key and, on v2, per endpoint (``shared/CAD-API.md``).
A request passed through our door (`dispatcher.http.passthrough`) made with the same key
as our own sends spends the same budget, so it must never cost a 911 call its turn.
Policy: **911 creations first, read-backs second, passthrough gets what is left.**

- v2, per (key, endpoint), per minute: the documented limit less what we reserve for
  ourselves on that endpoint, when the key is ours (another key's budget is its own):

  ============== ===== ================================================ ===========
  endpoint       limit reserved for us                                   passthrough
  ============== ===== ================================================ ===========
  get calls          5 3 (a read-back per server every 20 s,             2
                       `dispatcher.readback.V2_INTERVAL_S`)
  unit locations    12 0                                                12
  unit status       30 0                                                30
  panic             20 0                                                20
  blips (each)      30 0                                                30
  dispatch call     20 0                                                20
  call note         60 0                                                60
  attach, detach    10 0                                                10
  anything else     10 0 (unpublished: the lowest documented limit)     10
  ============== ===== ================================================ ===========

  Creating and deleting a 911 call are our own routes, never passed through; their
  budgets (10 each) stay whole for our sends and removals.
- v1 publishes no per-endpoint limits, only "about one request per second". Each
  endpoint gets `V1_PER_MINUTE` per key, and a request with our key must also find the
  shared rate limiter (`dispatcher.ratelimit`) idle, with no call of ours waiting for its
  slot and no 429 pause, and takes a slot of it: our sends and passthrough together stay
  within ``DISPATCHER_MAX_RATE``, calls first (v1 read-backs take slots the same way).

Beyond its share a request is refused with the wait in seconds (the door answers 429
with ``Retry-After``, as the CAD would). The windows are sliding, one Redis zset each
(``lua/passthrough_take.lua``):

    {p}:passthrough:{key hash}:{endpoint}  zset  request ids by time (TTL: window + 1 s)

The key hash is the first 16 hex digits of SHA-256: the key itself is never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from dispatcher import clock as shared_clock
from dispatcher import scripts
from dispatcher.keys import Keys
from dispatcher.ratelimit import Flow
from dispatcher.readback import V2_INTERVAL_S
from dispatcher.settings import Settings

#: The window of every budget, seconds (the CAD counts per minute).
WINDOW_S = 60.0
#: Requests per minute per key to any one v1 endpoint (the docs' one per second).
V1_PER_MINUTE = 60
#: Per minute per key to a v2 endpoint without a documented limit (the lowest documented).
V2_DEFAULT_PER_MINUTE = 10
#: What our own read-backs use of v2's "get calls" budget, per minute.
READBACK_PER_MINUTE = math.ceil(60 / V2_INTERVAL_S)

_SERVER = r"emergency/servers/[^/]+"
#: (method or None for each method, path under /v2/, endpoint name, limit per minute).
V2_BUDGETS: tuple[tuple[str | None, re.Pattern[str], str, int], ...] = tuple(
    (method, re.compile(f"^{path}$"), name, limit) for method, path, name, limit in (
        ("GET", f"{_SERVER}/calls", "get-calls", 5),
        ("PATCH", f"{_SERVER}/unit-locations", "unit-locations", 12),
        ("PATCH", f"{_SERVER}/units/status", "unit-status", 30),
        ("PATCH", f"{_SERVER}/units/panic", "panic", 20),
        (None, f"{_SERVER}/blips(/.*)?", "blips", 30),
        ("POST", f"{_SERVER}/(custom-)?dispatch-calls", "dispatch-call", 20),
        ("POST", f"{_SERVER}/dispatch-calls/[^/]+/notes", "call-note", 60),
        ("POST", f"{_SERVER}/dispatch-calls/[^/]+/attachments", "attach", 10),
        ("DELETE", f"{_SERVER}/dispatch-calls/attachments", "detach", 10),
    ))
#: What we reserve for ourselves of an endpoint's budget, when the key is ours.
RESERVED = {"get-calls": READBACK_PER_MINUTE}

_DIGITS = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class Budget:
    """One endpoint's budget for one request: its name and the share left to passthrough."""

    endpoint: str
    allowance: int
    #: Whether it shares the rate limiter with our sends (v1, our key): it waits behind
    #: queued calls and a 429 pause, and takes a slot of ``slot_interval_s``.
    shares_limiter: bool = False
    slot_interval_s: float = 0.0


def endpoint_of(method: str, segments: list[str], version: int) -> tuple[str, int]:
    """(name, documented limit per minute) of a request's endpoint. ``segments`` are the
    path's after ``/v2`` (v2) or the category and endpoint (v1)."""
    if version == 1:
        return "v1:" + "/".join(segments), V1_PER_MINUTE
    path = "/".join(segments)
    for want, pattern, name, limit in V2_BUDGETS:
        if (want is None or want == method) and pattern.match(path):
            return f"v2:{method}:{name}", limit
    # Unlisted: one budget per path shape (ids and the server's segment stand for any).
    shape = ["{}" if _DIGITS.match(s) or (i == 2 and segments[:2] == ["emergency", "servers"])
             else s for i, s in enumerate(segments)]
    return f"v2:{method}:" + "/".join(shape), V2_DEFAULT_PER_MINUTE


class CadBudget:
    """Takes passed-through requests out of the CAD's budgets, in one Redis."""

    def __init__(self, client: redis.Redis, settings: Settings,
                 clock: Callable[[], float] = shared_clock.now) -> None:
        self.client = client
        self.keys = Keys(settings.prefix)
        self.clock = clock
        self._ours = settings.api_key.reveal().encode() if settings.api_key else b""
        self._interval = Flow.from_settings(settings).interval_s
        self._take = scripts.register(client, "passthrough_take.lua")

    def is_ours(self, presented: str) -> bool:
        """Whether the client's key is the one we send with (constant time)."""
        return bool(self._ours) and hmac.compare_digest(presented.encode(), self._ours)

    def budget(self, method: str, segments: list[str], version: int,
               presented: str) -> Budget:
        """The budget a request with key ``presented`` spends."""
        name, limit = endpoint_of(method, segments, version)
        ours = self.is_ours(presented)
        if version == 1:
            return Budget(name, limit, ours, self._interval if ours else 0.0)
        reserved = RESERVED.get(name.split(":", 2)[2], 0) if ours else 0
        return Budget(name, max(0, limit - reserved))

    def take(self, budget: Budget, presented: str) -> float:
        """Spend one request of ``budget``: 0 when it may go, else the seconds to wait."""
        digest = hashlib.sha256(presented.encode()).hexdigest()[:16]
        window = f"{self.keys.prefix}:passthrough:{digest}:{budget.endpoint}"
        allowed, wait = self._take(keys=[window, self.keys.rate], args=[
            repr(self.clock()), repr(WINDOW_S), budget.allowance, uuid.uuid4().hex,
            repr(budget.slot_interval_s), int(budget.shares_limiter)])
        return 0.0 if int(allowed) else max(0.0, float(wait))
