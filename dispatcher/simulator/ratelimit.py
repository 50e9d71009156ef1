"""The fake CAD's rate limits: sliding windows per presented API key.

Two kinds, both counted per presented API key, neither counting the requests it rejects:
- The global limit (``set_rate_limit``), off by default: it counts every request on the
  API port, whatever its path or version (our assumption; v1 publishes no limits).
- The v2 per-endpoint limits, per minute as the real API has them: get calls 5 and
  delete 10 are on by default; create is left to the global limit (off), so tests that
  create many calls are not throttled unless they ask. A request the global limit
  admits can still be refused by its endpoint's limit.
The windows run on the simulator's clock, so ``advance()`` moves them on too.
"""

import hashlib
import math
from typing import Any

from dispatcher.simulator.answers import retry_after_value
from dispatcher.simulator.api import Request

# The v2 per-endpoint limits a simulator starts with, per key per minute (None: off).
ENDPOINT_LIMITS: dict[str, int | None] = {"create": None, "read": 5, "remove": 10}


class RateLimit:
    """Admit at most max_requests per key within window_s seconds; not thread-safe."""

    def __init__(self, max_requests: int, window_s: float, retry_after: int | None) -> None:
        self.max_requests = max_requests
        self.window_s = window_s
        # What Retry-After shows when set; None shows the seconds until the window frees.
        self.retry_after = retry_after
        self._windows: dict[str, list[float]] = {}

    def admit(self, req: Request, now: float) -> tuple[str, int] | None:
        """Admit a request arriving at now into its key's sliding window or say how long to wait.

        The refusal is (Retry-After value, seconds until the window frees).
        """
        # Keyed by a digest so the window table never holds a key in clear.
        bucket_id = hashlib.sha256(_presented_key(req).encode()).hexdigest()
        window_s = self.window_s
        bucket = [t for t in self._windows.get(bucket_id, []) if t > now - window_s]
        self._windows[bucket_id] = bucket
        if len(bucket) < self.max_requests:
            bucket.append(now)
            return None
        oldest = min(bucket) if bucket else now
        frees_in = max(1, math.ceil(oldest + window_s - now))
        retry_after = self.retry_after
        shown = retry_after_value(retry_after) if retry_after is not None else str(frees_in)
        return shown, frees_in


def _presented_key(req: Request) -> str:
    """Return the API key a request presents: the v2 bearer token, else the v1 ``key``."""
    presented: Any = req.bearer if req.version == 2 else None
    if req.version != 2 and isinstance(req.body, dict):
        presented = req.body.get("key")
    if not isinstance(presented, str):
        presented = ""
    return presented


class EndpointLimits:
    """The v2 per-endpoint limits, a window per route per key per minute; not thread-safe."""

    def __init__(self) -> None:
        self._limits = {route: _per_minute(n) for route, n in ENDPOINT_LIMITS.items()}

    def set(self, route: str, per_minute: int | None) -> None:
        """Limit a route to per_minute requests per key (None: no limit), with a fresh window."""
        if route not in ENDPOINT_LIMITS:
            raise ValueError(f"unknown route {route!r}; expected one of {list(ENDPOINT_LIMITS)}")
        if per_minute is not None and (
            isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 0
        ):
            raise ValueError("per_minute must be an integer >= 0 or None")
        self._limits[route] = _per_minute(per_minute)

    def admit(self, req: Request, now: float) -> tuple[str, int] | None:
        """Admit a v2 request into its route's window; v1 and unlimited routes always pass."""
        limit = self._limits.get(req.route) if req.version == 2 else None
        return None if limit is None else limit.admit(req, now)


def _per_minute(per_minute: int | None) -> RateLimit | None:
    """Build a per-minute limit; None means no limit."""
    return None if per_minute is None else RateLimit(per_minute, 60.0, None)
