"""When a dead-letter filter starts: the one reader of "since" for the CLI and the page.

`dispatcher dlq list --since` and the operations page's "since" field both take an ISO
8601 time (UTC unless it says otherwise) or a duration back from now: ``30m``, ``2h``,
``1d``, ``90s`` (unit in either case, spaces allowed around it).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd])\s*$", re.IGNORECASE)
#: Seconds per duration unit.
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """The Unix time `text` names; `ValueError` when it is neither a time nor a duration."""
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * UNITS[match.group(2).lower()]
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
