"""Tickets: the numeric ids the CAD's own clients accept.

Our ids are ULIDs (26 characters); the CAD's ids are positive integers, and its clients
(the seed's ``ID: (%d+)``, ``Sonoran.py``'s ``deleteEmergencyCallV2(callId)``) accept
nothing else. So every call also gets a *ticket* when it is recorded (``lua/enqueue.lua``):
a positive integer from one Redis counter, ``{p}:tickets``, starting above `TICKET_BASE`.
Real CAD ids are small (a community's running count), so a ticket and a CAD id can never
be confused, and every ticket is below 2**53: exact in Lua's and JavaScript's doubles.

``{p}:ticket:{n}`` maps a ticket to our id; it lives as long as the call's record (set
without expiry when the call is recorded, given the record's expiry with it).

Where our door answers in the CAD's shape it gives the CAD's id when known, else the
ticket; status, removal and the page accept a ULID, a ticket or a CAD id we delivered.
"""

from __future__ import annotations

import re

import redis

from dispatcher.keys import Keys
from dispatcher.redisconn import as_text

#: Tickets are above this (the counter starts here; the first ticket is TICKET_BASE + 1).
TICKET_BASE = 9_000_000_000_000_000
#: The largest integer a double holds exactly; no ticket reaches it.
TICKET_MAX = 2**53 - 1

_DIGITS = re.compile(r"^[0-9]{1,16}$")


def is_ticket(given: object) -> bool:
    """Whether ``given`` (an int or its text) is in the tickets' range."""
    if isinstance(given, bool):
        return False
    if isinstance(given, int):
        return TICKET_BASE < given <= TICKET_MAX
    if isinstance(given, str) and _DIGITS.match(given.strip()):
        return TICKET_BASE < int(given) <= TICKET_MAX
    return False


class Tickets:
    """Looks tickets up in one Redis."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)

    def call_id(self, ticket: int | str) -> str | None:
        """Our id of the call with that ticket; None when there is none (or not a ticket)."""
        if not is_ticket(ticket):
            return None
        found = self.client.get(self.keys.ticket(int(ticket)))
        return None if found is None else as_text(found)

    def of(self, call_id: str) -> int | None:
        """The ticket of our call ``call_id``; None when it has none (recorded before
        tickets existed) or the call is unknown."""
        found = self.client.hget(self.keys.call(call_id), "ticket")
        text = as_text(found) if found is not None else ""
        return int(text) if text.isdigit() else None

    def cad_id(self, ticket: int | str) -> tuple[str | None, str | None]:
        """(our id, the CAD's id) of the call with that ticket; the CAD's id is None until
        the call is delivered (and after it was removed); our id is None when unknown."""
        call_id = self.call_id(ticket)
        if call_id is None:
            return None, None
        state, cad = self.client.hmget(self.keys.call(call_id), "state", "cad_call_id")
        if state is None:
            return None, None
        cad_text = as_text(cad) if cad is not None else ""
        if as_text(state) != "delivered" or not cad_text:
            return call_id, None
        return call_id, cad_text
