"""The shared rate limiter: the calendar of sends, the send gate and the 429 pause.

Redis (prefix ``dispatcher`` by default):

    {p}:rate          hash  tat (the next free slot, GCRA), pause_until (a 429 pause),
                            last_send (the send gate's last "go")
    {p}:rate:granted  zset  send starts granted to claims, by time (recent only)

Every call reaching the CAD passes three checks, all in Lua (``lua/_ratelimit.lua``):
a slot reserved when its message goes out (``reserve_slot``, in line order), a grant at
claim time that keeps two starts at least the limit apart (``rate_grant``, re-slotting
the whole line when messages waited long past their slots), and the send gate right
before the request (``gate.lua``). A 429 pauses every sender (``rate_pause``, written
by the retry script); the pause holds claims and releases until it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from dispatcher import scripts
from dispatcher.keys import Keys
from dispatcher.policy import DEFAULT_RATE_LIMIT_PAUSE_S, MAX_SLOT_WAIT_S, RELEASE_AHEAD_S
from dispatcher.redisconn import as_text
from dispatcher.settings import Settings

#: Extra spacing over 1/rate (2 % plus up to 10 ms), so scheduling and network jitter
#: of a few ms never lets two requests land closer than the limit allows at the CAD.
RATE_MARGIN = 1.02
RATE_MARGIN_S = 0.01
#: Most Celery messages out at once when no rate limit applies (bounds the broker list).
UNLIMITED_WINDOW = 256
#: A slot this far in the past (or one interval, if longer) means the call's message
#: waited for a worker; its claim re-slots the whole line (``reslot`` in the Lua).
STALE_SLOT_S = 1.0


@dataclass(frozen=True)
class Flow:
    """Pacing parameters shared by enqueue, claim and release, and the default 429 pause."""

    interval_s: float
    max_wait_s: float
    window: int
    #: Least time between two actual sends (the interval, margin included).
    send_gap_s: float = 0.0
    #: The limit itself, 1/DISPATCHER_MAX_RATE: the least time between two grants.
    limit_gap_s: float = 0.0
    #: Pause of every sender after a 429 without a Retry-After header.
    pause_s: float = DEFAULT_RATE_LIMIT_PAUSE_S
    #: How far ahead of its slot a call gets its message (RELEASE_AHEAD_S).
    ahead_s: float = RELEASE_AHEAD_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Flow:
        interval = gap = 0.0
        if settings.max_rate > 0:
            gap = 1 / settings.max_rate
            interval = gap * RATE_MARGIN + min(RATE_MARGIN_S, gap / 100)
        return cls(interval, MAX_SLOT_WAIT_S, UNLIMITED_WINDOW, interval, gap)

    def argv(self) -> list[str | int]:
        """Interval, lookahead and window, as the release and enqueue scripts take them."""
        return [repr(self.interval_s), repr(self.ahead_s), self.window]


#: The send gate's answer besides a wait: ``go`` (send now) or ``paused`` (a 429 pause).
GateOutcome = Literal["go", "paused"]


class RateLimit:
    """The send gate and the 429 pause of one prefix."""

    def __init__(self, client: redis.Redis, flow: Flow, prefix: str = "dispatcher",
                 clock: Callable[[], float] | None = None) -> None:
        """``clock``: None times the sends by Redis's own clock, in the gate script (the
        sends of every machine spaced exactly); a clock of its own otherwise (tests)."""
        self.client = client
        self.flow = flow
        self.key = Keys(prefix).rate
        self.clock = clock
        self._gate = scripts.register(client, "gate.lua")

    def gate(self) -> GateOutcome | float:
        """"go" (send now), "paused" (a 429 pause began), or seconds to wait first."""
        now = "" if self.clock is None else repr(self.clock())
        res = self._gate(keys=[self.key], args=[now, repr(self.flow.send_gap_s)])
        text = as_text(res)
        return cast(GateOutcome, text) if text in ("go", "paused") else float(text)


def paused_until(client: redis.Redis, prefix: str) -> float:
    """End of the current 429 pause of ``prefix`` (0 when none)."""
    return pause_end(client.hget(Keys(prefix).rate, "pause_until"))


def pause_end(value: Any) -> float:
    """The ``pause_until`` field as Redis returned it (HGET, e.g. in a pipeline)."""
    return float(value) if value else 0.0
