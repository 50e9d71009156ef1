"""Taking a call back (`remove_call`, ``dispatcher remove``, REMOVE_911 and DELETE at the door).

A game server (or an operator) may take back a call it made: a prank, a test, a caller
who hung up. What that means depends on where the call is, decided atomically in Redis
(``lua/take_back.lua``):

- not yet sent (queued, scheduled, held, or a dead letter): ``cancelled``, never sent,
  even by a worker already holding its message (the message finds it gone);
- being sent, or its outcome unknown (``verifying``): taken back once the outcome is
  known: created in the CAD, it is removed; not created, it is cancelled (``pending``
  until then);
- delivered: removed from the CAD (v1 REMOVE_911, v2 DELETE) by a worker, with the same
  retries, breaker and rate limit as a call: ``removing``, then ``removed``. The CAD saying
  the call is gone counts as removed; a permanent refusal is a dead letter (reason
  ``rejected``, kind ``removal``) whose replay retries the removal, never the call.

A call is named by our id (a ULID), by its ticket (`dispatcher.tickets`) or by the CAD's
id of a call we delivered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, cast

import redis

from dispatcher import clock as shared_clock
from dispatcher import scripts
from dispatcher.errors import DispatcherError
from dispatcher.keys import DELIVERED_TTL_S, Keys
from dispatcher.producer import default_producer
from dispatcher.redisconn import as_text, bounded
from dispatcher.tickets import is_ticket

#: What taking a call back did (see the module docstring).
TakeBack = Literal["cancelled", "pending", "removing", "removed"]

#: Our ids: 26 characters of Crockford's base 32 (`dispatcher.call.new_call_id`).
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
#: The CAD's ids are positive integers.
_CAD_ID = re.compile(r"^[0-9]{1,18}$")


class UnknownCall(DispatcherError, LookupError):
    """No call of ours has that id (nor was any call we delivered given it by the CAD)."""


def resolve(client: redis.Redis, keys: Keys, given: str) -> str | None:
    """Our id of the call named ``given``: our id, its ticket (`dispatcher.tickets`), or
    the CAD's id of a call we delivered (tickets are above any CAD id: never confused)."""
    given = given.strip()
    if _ULID.match(given.upper()):
        return given.upper() if client.exists(keys.call(given.upper())) else None
    if is_ticket(given):
        found = client.get(keys.ticket(int(given)))
        return None if found is None else as_text(found)
    if _CAD_ID.match(given):
        found = client.get(keys.cad(given))
        return None if found is None else as_text(found)
    return None


class TakeBacks:
    """Takes calls back in one Redis (the producer's, the web's or the CLI's client)."""

    def __init__(self, client: redis.Redis, prefix: str,
                 clock: Callable[[], float] = shared_clock.now) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.clock = clock
        self._take_back = scripts.register(client, "take_back.lua")

    def remove(self, given: str) -> tuple[str, TakeBack]:
        """Take back the call named ``given``; returns (our id, what happened).

        Raises UnknownCall when no call of ours has that id (also for an inbox entry that
        never was a call), QueueUnavailable when Redis cannot be reached in time.
        """
        call_id = self.lookup(given)
        return call_id, self.take_back(call_id, given)

    def lookup(self, given: str) -> str:
        """Our id of the call named ``given``; UnknownCall when there is none."""
        call_id = bounded(lambda: resolve(self.client, self.keys, given))
        if call_id is None:
            raise UnknownCall(f"no call has the id {given!r} (our id, its ticket, or the "
                              "CAD's id of a call we delivered)")
        return call_id

    def take_back(self, call_id: str, given: str) -> TakeBack:
        """Take back the call ``call_id`` (looked up from ``given``, named in errors)."""
        done = as_text(bounded(lambda: self._take_back(
            keys=[self.keys.prefix], args=[call_id, repr(self.clock()), DELIVERED_TTL_S])))
        if done in ("missing", "invalid"):
            raise UnknownCall(f"no call has the id {given!r}"
                              + (" (an inbox entry that was never a call)"
                                 if done == "invalid" else ""))
        return cast(TakeBack, done)


def remove_call(call_id: str) -> TakeBack:
    """Take back a call (our id, its ticket, or the CAD's id of a call we delivered): one
    not yet sent is never sent (``cancelled``); one delivered is removed from the CAD
    (``removing``, then ``removed``); one being sent is taken back once its outcome is
    known (``pending``). Raises UnknownCall or QueueUnavailable."""
    producer = default_producer()
    return TakeBacks(producer.client, producer.settings.prefix).remove(call_id)[1]
