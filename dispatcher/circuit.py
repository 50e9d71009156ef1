"""The shared circuit breaker: one hash that every worker reads and writes atomically.

Redis (prefix ``dispatcher`` by default):

    {p}:circuit  hash  state (closed, open, half_open), failures (consecutive),
                       cooldown, open_until, opened_at, probe (the one call let through
                       to test the CAD), probe_until, flush (after closing: calls on
                       backoff go back in line), last_success_at, last_failure_at,
                       last_error

The rules live in ``lua/_circuit.lua``, used by the claim, outcome and schedule scripts:
`CircuitPolicy.failure_threshold` consecutive retryable failures open the breaker for
its cooldown; then one probe is released; its success closes the breaker, its failure
re-opens it with the cooldown doubled (up to `CircuitPolicy.max_cooldown_s`). Any CAD
answer (delivered, rejected, 429) counts as a success. This module reads the hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from dispatcher.keys import Keys
from dispatcher.redisconn import as_text

CircuitState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class CircuitView:
    """The breaker as operators see it."""

    state: CircuitState
    failures: int = 0
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_error: str | None = None

    @classmethod
    def from_hash(cls, fields: Mapping[str, str], now: float) -> CircuitView:
        """Read the hash; an open breaker whose cooldown is over shows as ``half_open``
        (the next call is a probe)."""
        state = cast(CircuitState, fields.get("state") or "closed")
        if state == "open" and float(fields.get("open_until") or 0) <= now:
            state = "half_open"
        return cls(state, int(fields.get("failures") or 0), _float(fields.get("last_success_at")),
                   _float(fields.get("last_failure_at")), fields.get("last_error") or None)


def read(client: redis.Redis, prefix: str, now: float) -> CircuitView:
    """The breaker of ``prefix`` now."""
    return view(client.hgetall(Keys(prefix).circuit), now)


def view(raw: Mapping[Any, Any], now: float) -> CircuitView:
    """The breaker from its hash as Redis returned it (HGETALL, e.g. in a pipeline)."""
    return CircuitView.from_hash({as_text(k): as_text(v) for k, v in raw.items()}, now)


def _float(value: str | None) -> float | None:
    return float(value) if value else None
