"""The world of the lifecycle tests: one fake Redis, one clock, one fake publisher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fakeredis

from dispatcher.call import Call, new_call_id
from dispatcher.deadletters import DeadLetters
from dispatcher.keys import Keys
from dispatcher.lifecycle import Enqueued, Lifecycle
from dispatcher.records import Records
from dispatcher.schedule import Pump
from dispatcher.settings import Settings

#: The sorted sets a call's place is one of (and ``pending``, every call not yet done).
PLACES = ("held", "queued", "scheduled", "inflight", "pending", "dead")


@dataclass
class World:
    """Everything that shares one Redis, one clock and one fake publisher."""

    r: fakeredis.FakeRedis
    clock: Any
    publisher: Any
    settings: Settings
    lc: Lifecycle
    pump: Pump
    dead: DeadLetters
    records: Records

    def add(self, caller: str = "Jane Doe", idem: str | None = None, **kw: Any) -> Enqueued:
        """Enqueue a call now; then move the clock one second so times and ids order."""
        now = self.clock()
        call = Call.create(caller=caller, location="Route 68", description="Crash",
                           idempotency_key=idem, **kw).with_envelope(new_call_id(now), now)
        message = (self.publisher.queue_key, self.publisher.message(call.id, 1))
        result = self.lc.enqueue(call, message)
        self.clock.advance(1.0)
        return result

    def state(self, call_id: str) -> str:
        record = self.records.get(call_id)
        assert record is not None
        return record.state

    def field(self, call_id: str, name: str) -> str | None:
        value: Any = self.r.hget(self.keys.call(call_id), name)
        return None if value is None else value.decode()

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.prefix)

    def oldest_held(self) -> str:
        """The call at the head of the line (the next one the pump releases)."""
        members: Any = self.r.zrange(self.keys.held, 0, 0)
        return str(members[0].decode())

    def where(self, call_id: str) -> list[str]:
        return [z for z in PLACES if self.r.zscore(getattr(self.keys, z), call_id) is not None]

    def claim_published(self) -> list[str]:
        """Claim every published message once, newest generation only; return claim kinds."""
        kinds = []
        for call_id, gen in list(self.publisher.published):
            kinds.append(self.lc.claim(call_id, gen).kind)
        self.publisher.published.clear()
        return kinds
