"""The shared rate limiter: the calendar of sends, the send gate and the 429 pause.

Redis (prefix ``dispatcher`` by default):

    {p}:rate          hash  tat (the next free slot, GCRA), pause_until (a 429 pause),
                            last_send (the send gate's last "go"), send_tat (when the
                            next send is due: one gap after the last departure
                            reported, or after the last due time if later),
                            sent_pending (a "go" not reported gone yet)
    {p}:rate:granted  zset  send starts granted to claims, by time (recent only)

Every call reaching the CAD passes three checks, all in Lua (``lua/_ratelimit.lua``):
a slot reserved when its message goes out (``reserve_slot``, in line order), a grant at
claim time that keeps two starts at least the limit apart (``rate_grant``, re-slotting
the whole line when messages waited long past their slots), and the send gate right
before the request (``gate.lua``), which spaces the sends by when they left: the worker
reports each departure (``sent.lua``) and the next "go" waits for it. A 429 pauses
every sender (``rate_pause``, written by the retry script); the pause holds claims and
releases until it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from dispatcher import scripts
from dispatcher.keys import Keys
from dispatcher.policy import DEFAULT_RATE_LIMIT_PAUSE_S, MAX_SLOT_WAIT_S, RELEASE_AHEAD_S
from dispatcher.redisconn import as_text
from dispatcher.settings import Settings

#: The slots of the line are 1/rate plus 0.8 %: the pace at the limit.
RATE_MARGIN = 1.008
#: The send gate's gap is 1/rate plus 0.7 %, a little less than the slots', so sends
#: pushed back by a late one catch up with their slots again.
SEND_MARGIN = 1.007
#: The send gate measures the gap from when the last request's bytes left (the worker
#: reports it; ``gate.lua``) and gives a "go" up to this many of its margins early (the
#: tolerance: at 1/s 14 ms, at 2/s 7 ms), so the worker's own path from "go" to the
#: socket and back to Redis (2-5 ms; 10-30 ms on a machine loaded several times over)
#: and a thread waking a little late cost no pace, while a thread descheduled for longer
#: pushes the next sends back. Any k + 1 arrivals at the CAD then span at least k gaps
#: less the tolerance, i.e. k/rate + (k - 2) margins: a sliding window that holds 3 or
#: more requests at the limit never holds one too many from our side, and the rest is
#: left for jitter on the way and in the CAD's own timing (a 10 s window: 56 ms at 1/s,
#: 63 ms at 2/s; at 0.5 % and five margins, 20-30 ms, a loaded machine's simulator saw
#: a 429 in 5 minutes).
TOLERANCE_MARGINS = 2.0
#: A "go" whose departure is not reported this long after the connect timeout (its
#: worker died between "go" and send) counts as having left then.
REPORT_GRACE_S = 1.0
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
    #: The send gate's gap between two sends (SEND_MARGIN; see ``gate.lua``).
    send_gap_s: float = 0.0
    #: The limit itself, 1/DISPATCHER_MAX_RATE: the least time between two grants.
    limit_gap_s: float = 0.0
    #: Pause of every sender after a 429 without a Retry-After header.
    pause_s: float = DEFAULT_RATE_LIMIT_PAUSE_S
    #: How far ahead of its slot a call gets its message (RELEASE_AHEAD_S).
    ahead_s: float = RELEASE_AHEAD_S
    #: How long the gate waits for a "go"'s departure report before it counts it as
    #: gone (the connect timeout plus REPORT_GRACE_S).
    report_timeout_s: float = 0.0
    #: How early the gate may give a "go" against its schedule (TOLERANCE_MARGINS).
    tolerance_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Flow:
        interval = gap = 0.0
        if settings.max_rate > 0:
            gap = 1 / settings.max_rate
            interval = gap * RATE_MARGIN
            send_gap = gap * SEND_MARGIN
            return cls(interval, MAX_SLOT_WAIT_S, UNLIMITED_WINDOW, send_gap, gap,
                       report_timeout_s=settings.connect_timeout_s + REPORT_GRACE_S,
                       tolerance_s=(send_gap - gap) * TOLERANCE_MARGINS)
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
        self._sent = scripts.register(client, "sent.lua")
        self._local = threading.local()

    def _now(self) -> str:
        return "" if self.clock is None else repr(self.clock())

    def gate(self, report: bool = False) -> GateOutcome | float:
        """"go" (send now), "paused" (a 429 pause began), or seconds to wait first.

        ``report``: this thread reports when its request left (`sent`); the gate's next
        "go" waits for that report (up to ``flow.report_timeout_s``) and is spaced from
        the departure (``gate.lua``), so a sender that left late pushes the next back."""
        timeout = self.flow.report_timeout_s if report else 0.0
        res = self._gate(keys=[self.key], args=[
            self._now(), repr(self.flow.send_gap_s), repr(timeout),
            repr(self.flow.tolerance_s)])
        text = as_text(res)
        if text.startswith("go "):
            self._local.stamp = text[3:]
            return "go"
        return cast(GateOutcome, text) if text in ("go", "paused") else float(text)

    def sent(self) -> float | None:
        """Report that this thread's request (after ``gate(report=True)``) has left: call
        it once its bytes are written. The lateness of the departure after its "go" (s),
        or None when there is no "go" to report on (reported already)."""
        stamp = getattr(self._local, "stamp", None)
        if stamp is None:
            return None
        self._local.stamp = None
        res = self._sent(keys=[self.key],
                         args=[self._now(), stamp, repr(self.flow.send_gap_s)])
        return float(as_text(res))


def paused_until(client: redis.Redis, prefix: str) -> float:
    """End of the current 429 pause of ``prefix`` (0 when none)."""
    return pause_end(client.hget(Keys(prefix).rate, "pause_until"))


def pause_end(value: Any) -> float:
    """The ``pause_until`` field as Redis returned it (HGET, e.g. in a pipeline)."""
    return float(value) if value else 0.0
