"""The dead-letter store: calls that cannot be sent until an operator acts.

A dead letter is a call record in state ``dead`` plus its id in the ``dead`` sorted
set (by time of death). No TTL, no cap: nothing leaves except by an operator's
replay or purge, each recorded in the audit list. Replay puts the call back in line
(oldest first) and it is sent with the credentials configured at send time; records
never hold credentials.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis

from dispatcher.call import new_call_id
from dispatcher.keys import LUA_COMMON, Keys
from dispatcher.lifecycle import as_text
from dispatcher.records import CallRecord, Records

#: Dead-letter reason of an entry that is not a valid call (kept with its raw text).
REASON_INVALID = "invalid"
#: Most characters of an invalid entry's raw text that are kept.
MAX_RAW_CHARS = 64 * 1024
#: Audit entries kept (the newest); the dead letters themselves are never capped.
AUDIT_KEEP = 10_000

_REPLAY = LUA_COMMON + r"""
local id, now = ARGV[2], tonumber(ARGV[3])
local r = redis.call('HMGET', ck(id), 'state', 'enqueued_at', 'reason', 'call')
if not r[1] then return 'missing' end
if r[1] ~= 'dead' then return 'not_dead' end
if not r[4] or r[4] == '' or r[4] == '{}' then return 'unreplayable' end
redis.call('ZREM', k('dead'), id)
redis.call('HINCRBY', ck(id), 'replays', 1)
redis.call('HSET', ck(id), 'last_reason', r[3] or '', 'reason', '', 'age_from', now,
  'replayed_at', now, 'failures', 0)
redis.call('ZADD', k('pending'), tonumber(r[2]), id)
redis.call('HINCRBY', k('counters'), 'replayed', 1)
hold(id, tonumber(r[2]), now)
return 'replayed'
"""

_PURGE = LUA_COMMON + r"""
local id = ARGV[2]
if redis.call('HGET', ck(id), 'state') ~= 'dead' then return 0 end
redis.call('DEL', ck(id))
redis.call('ZREM', k('dead'), id)
redis.call('HINCRBY', k('counters'), 'purged', 1)
return 1
"""

_BURY_INVALID = LUA_COMMON + r"""
local id, now = ARGV[2], tonumber(ARGV[3])
if ARGV[7] and ARGV[7] ~= '' then
  if redis.call('LREM', ARGV[7], 1, ARGV[8]) == 0 then return '' end
end
redis.call('HSET', ck(id), 'id', id, 'call', '{}', 'raw', ARGV[4], 'state', 'dead',
  'reason', 'invalid', 'last_error', ARGV[5], 'enqueued_at', now, 'dead_at', now,
  'attempts', 0, 'source', ARGV[6], 'updated_at', now)
redis.call('ZADD', k('dead'), now, id)
redis.call('HINCRBY', k('counters'), 'dead:invalid', 1)
return id
"""


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
            needle = self.search.lower()
            hay = " ".join(str(record.call.get(f, "")) for f in
                           ("caller", "location", "description")).lower()
            if needle not in hay:
                return False
        return True


class DeadLetters:
    """List, show, replay and purge dead letters."""

    def __init__(self, client: redis.Redis, prefix: str = "dispatcher",
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.records = Records(client, prefix, clock)
        self.clock = clock
        self._replay = client.register_script(_REPLAY)
        self._purge = client.register_script(_PURGE)
        self._bury_invalid = client.register_script(_BURY_INVALID)

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

    def replay(self, call_id: str, actor: str = "cli") -> str:
        """Put one dead letter back in line; returns replayed, missing, not_dead or unreplayable."""
        result = self._replay(args=[self.keys.prefix, call_id, repr(self.clock())])
        outcome = result.decode() if isinstance(result, bytes) else str(result)
        if outcome == "replayed":
            self._audit("replay", call_id, actor)
        return outcome

    def purge(self, call_id: str, actor: str = "cli") -> bool:
        """Delete one dead letter for good."""
        done = bool(self._purge(args=[self.keys.prefix, call_id]))
        if done:
            self._audit("purge", call_id, actor)
        return done

    def bury_invalid(
        self, raw: str, error: str, source: str, take_from: tuple[str, str] | None = None
    ) -> str:
        """Keep an entry that is not a valid call as a dead letter ``invalid``; returns its id.

        With ``take_from=(list_key, entry)`` the entry leaves that list in the same step
        (returns "" if it was already gone).
        """
        now = self.clock()
        call_id = new_call_id(now)
        result = self._bury_invalid(args=[self.keys.prefix, call_id, repr(now),
                                          raw[:MAX_RAW_CHARS], error[:500], source,
                                          *(take_from or ("", ""))])
        return result.decode() if isinstance(result, bytes) else str(result)

    def audit(self, limit: int = 100) -> builtins.list[dict[str, object]]:
        return [json.loads(v) for v in self.client.lrange(self.keys.audit, 0, limit - 1)]

    def _audit(self, action: str, call_id: str, actor: str) -> None:
        entry = json.dumps({"at": self.clock(), "action": action, "id": call_id, "actor": actor})
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(self.keys.audit, entry)
        pipe.ltrim(self.keys.audit, 0, AUDIT_KEEP - 1)
        pipe.execute()

