"""The fake CAD's rate limit: a sliding window per presented API key.

Off by default (the real v2 allows 10 creations a minute per key); when on it counts
every request on the API port, whatever its path, per presented API key (our
assumption). Requests it rejects do not count against the window.
"""

import hashlib
import math
from typing import Any

from dispatcher.simulator.answers import retry_after_value
from dispatcher.simulator.api import Request


class RateLimit:
    """Admit at most max_requests per key within window_s seconds; not thread-safe."""

    def __init__(self, max_requests: int, window_s: float, retry_after: int | None) -> None:
        self.max_requests = max_requests
        self.window_s = window_s
        # What Retry-After shows when set; None shows the seconds until the window frees.
        self.retry_after = retry_after
        self._windows: dict[str, list[float]] = {}

    def admit(self, req: Request) -> tuple[str, int] | None:
        """Admit a request into its key's sliding window or say how long to wait.

        The refusal is (Retry-After value, seconds until the window frees).
        """
        # Keyed by a digest so the window table never holds a key in clear.
        bucket_id = hashlib.sha256(_presented_key(req).encode()).hexdigest()
        window_s = self.window_s
        bucket = [t for t in self._windows.get(bucket_id, []) if t > req.arrived - window_s]
        self._windows[bucket_id] = bucket
        if len(bucket) < self.max_requests:
            bucket.append(req.arrived)
            return None
        oldest = min(bucket) if bucket else req.arrived
        frees_in = max(1, math.ceil(oldest + window_s - req.arrived))
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
