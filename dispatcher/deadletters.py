"""The dead-letter store: calls that cannot be sent until an operator acts.

A dead letter is a call record in state ``dead`` plus its id in the ``dead`` sorted
set (by time of death). No TTL: nothing leaves except by an operator's replay or
purge, each recorded in the audit list; except invalid inbox entries (anyone who can
LPUSH can make them): beyond DISPATCHER_MAX_INVALID the oldest are summarised (count,
oldest and newest time, their SHA-256 hashes) and their records dropped. Replay puts
the call back in line (oldest first) and it is sent with the credentials configured at
send time; records never hold credentials.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, cast

import redis

from dispatcher import clock as shared_clock
from dispatcher import scripts
from dispatcher.call import new_call_id
from dispatcher.keys import Keys
from dispatcher.records import CallRecord, Records, iso
from dispatcher.redact import sha256
from dispatcher.redisconn import as_text
from dispatcher.settings import DEFAULT_MAX_INVALID

log = logging.getLogger(__name__)

#: Why a call is a dead letter: ``rejected`` (the CAD refused it), ``expired`` (older
#: than DISPATCHER_MAX_AGE_S before it could be sent) or ``invalid`` (not a valid call:
#: an inbox entry, or a stored call that no longer validates).
DeadReason = Literal["rejected", "expired", "invalid"]
#: What `DeadLetters.replay` did.
ReplayOutcome = Literal["replayed", "missing", "not_dead", "unreplayable"]

#: Most characters of an invalid entry's raw text that are kept.
MAX_RAW_CHARS = 64 * 1024
#: Audit entries kept (the newest); the dead letters themselves are never capped.
AUDIT_KEEP = 10_000
#: SHA-256 hashes of summarised invalid entries kept (the newest).
SUMMARY_HASHES_KEEP = 1_000
#: At most one log line per this many seconds about summarised invalid entries.
SUMMARY_LOG_EVERY_S = 60.0

@dataclass(frozen=True)
class Filter:
    """Which dead letters an operation applies to."""

    reason: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None

    def matches(self, record: CallRecord) -> bool:
        if self.reason and record.reason != self.reason:
            return False
        if self.search:
            needle = self.search.strip().lower()
            # Our id, the ticket and the CAD's id match whole; the call's text in part.
            if needle in (record.id.lower(), str(record.ticket), record.cad_call_id or ""):
                return True
            hay = " ".join(str(record.call.get(f, "")) for f in
                           ("caller", "location", "description")).lower()
            if needle not in hay:
                return False
        return True


class DeadLetters:
    """List, show, replay and purge dead letters."""

    def __init__(self, client: redis.Redis, prefix: str = "dispatcher",
                 clock: Callable[[], float] = shared_clock.now,
                 max_invalid: int = DEFAULT_MAX_INVALID) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.records = Records(client, prefix, clock)
        self.clock = clock
        self.max_invalid = max_invalid
        self._summarised_unlogged = 0
        self._summary_logged_at: float | None = None
        self._replay = scripts.register(client, "replay.lua")
        self._purge = scripts.register(client, "purge.lua")
        self._bury_invalid = scripts.register(client, "bury_invalid.lua")

    def count(self) -> int:
        return int(self.client.zcard(self.keys.dead))

    def iter(self, flt: Filter | None = None, page: int = 500,
             light: bool = False) -> Iterator[CallRecord]:
        """Dead letters, newest first, matching the filter (``light``: display fields only,
        never the raw text: `Records.display_many`)."""
        read = self.records.display_many if light else self.records.get_many
        flt = flt or Filter()
        high: float | str = "+inf" if flt.until is None else flt.until
        low: float | str = "-inf" if flt.since is None else flt.since
        offset = 0
        while True:
            ids = self.client.zrevrangebyscore(self.keys.dead, high, low, start=offset, num=page)
            if not ids:
                return
            offset += len(ids)
            for record in read([as_text(i) for i in ids]):
                if record.state == "dead" and flt.matches(record):
                    yield record

    def list(self, flt: Filter | None = None, limit: int | None = None) -> list[CallRecord]:
        out = []
        for record in self.iter(flt):
            out.append(record)
            if limit is not None and len(out) >= limit:
                break
        return out

    def get(self, call_id: str) -> CallRecord | None:
        record = self.records.get(call_id)
        return record if record and record.state == "dead" else None

    def raw(self, call_id: str) -> str | None:
        """The raw text kept for an invalid entry."""
        value = self.client.hget(self.keys.call(call_id), "raw")
        return as_text(value) if value else None

    def replay(self, call_id: str, actor: str = "cli") -> ReplayOutcome:
        """Put one dead letter back in line (see `ReplayOutcome`)."""
        result = self._replay(keys=[self.keys.prefix], args=[call_id, repr(self.clock())])
        outcome = cast(ReplayOutcome, as_text(result))
        if outcome == "replayed":
            self._audit("replay", call_id, actor)
        return outcome

    def purge(self, call_id: str, actor: str = "cli") -> bool:
        """Delete one dead letter for good."""
        done = bool(self._purge(keys=[self.keys.prefix], args=[call_id]))
        if done:
            self._audit("purge", call_id, actor)
        return done

    def bury_invalid(
        self, raw: str, error: str, source: str, take_from: tuple[str, str] | None = None
    ) -> str:
        """Keep an entry that is not a valid call as a dead letter ``invalid``; returns its id.

        With ``take_from=(list_key, entry)`` the entry leaves that list in the same step
        (returns "" if it was already gone). Beyond ``max_invalid`` invalid dead letters
        the oldest are summarised (see `invalid_summary`).
        """
        now = self.clock()
        call_id = new_call_id(now)
        # The hash names the entry as its producer sent it (before any redaction).
        original = take_from[1] if take_from else raw
        digest = sha256(original)
        inbox, entry = take_from or ("", "")
        result = self._bury_invalid(keys=[self.keys.prefix, inbox],
                                    args=[call_id, repr(now), raw[:MAX_RAW_CHARS], error[:500],
                                          source, entry, digest, self.max_invalid,
                                          SUMMARY_HASHES_KEEP])
        if not isinstance(result, list):
            return ""
        self._log_summarised(int(as_text(result[1])), int(as_text(result[2])))
        return as_text(result[0])

    def _log_summarised(self, n: int, total: int) -> None:
        """One log line a minute at most: attackers can make invalid entries fast."""
        self._summarised_unlogged += n
        now = self.clock()
        if not self._summarised_unlogged or (
                self._summary_logged_at is not None
                and now - self._summary_logged_at < SUMMARY_LOG_EVERY_S):
            return
        log.warning("%d invalid inbox entr%s beyond DISPATCHER_MAX_INVALID=%d summarised "
                    "(records dropped; count, times and SHA-256 kept): %d in all",
                    self._summarised_unlogged,
                    "y" if self._summarised_unlogged == 1 else "ies", self.max_invalid, total)
        self._summarised_unlogged = 0
        self._summary_logged_at = now

    def invalid_summary(self, hashes: int = 0) -> dict[str, object]:
        """Invalid entries summarised beyond the cap: count, first/last time, newest hashes."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.keys.counters, "invalid_summarised")
        pipe.hmget(self.keys.invalid_summary, "oldest_at", "newest_at")
        if hashes > 0:
            pipe.lrange(self.keys.invalid_hashes, 0, hashes - 1)
        count, (oldest, newest), *rest = pipe.execute()
        digests = rest[0] if rest else []
        return {"count": int(count or 0),
                "oldest_at": iso(float(oldest)) if oldest else None,
                "newest_at": iso(float(newest)) if newest else None,
                **({"sha256": [as_text(d) for d in digests]} if hashes > 0 else {})}

    def audit(self, limit: int = 100) -> builtins.list[dict[str, object]]:
        return [json.loads(v) for v in self.client.lrange(self.keys.audit, 0, limit - 1)]

    def _audit(self, action: str, call_id: str, actor: str) -> None:
        entry = json.dumps({"at": self.clock(), "action": action, "id": call_id, "actor": actor})
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(self.keys.audit, entry)
        pipe.ltrim(self.keys.audit, 0, AUDIT_KEEP - 1)
        pipe.execute()

