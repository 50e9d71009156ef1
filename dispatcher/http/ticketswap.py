"""Our tickets in a passed-through request, swapped for the CAD's ids before it leaves.

A client that got a ticket from our door (`dispatcher.tickets`) uses it where the CAD
expects its own call id: a path segment (v2 ``.../calls/{callId}/...``) or a ``callId`` /
``callIds`` member of the JSON body (v1: inside the ``data`` objects; any depth is looked
at, since a ticket is in a range CAD ids never reach). Once the call is delivered the
ticket is replaced by the CAD's id (a number stays a number, a string a string); before
that the request must not leave with our number: `Unresolved` says why (409 not in the
CAD yet, 404 unknown). A body without a ticket is left byte for byte as it came.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from dispatcher.tickets import is_ticket

#: Members whose value (or list of values) names calls.
CALL_ID_MEMBERS = frozenset({"callId", "callIds"})
#: Deepest nesting looked into (the door's own body limit is deeper; calls sit shallow).
MAX_DEPTH = 32

# Every ticket is 16 digits starting with 900 (TICKET_BASE < t <= 2**53 - 1): a body
# without this is left alone, unparsed.
_TICKETISH = re.compile(rb"900[0-9]{13}")


class Unresolved(Exception):
    """A ticket that cannot be swapped: ``status`` 404 (unknown) or 409 (not delivered)."""

    def __init__(self, status: int, ticket: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.ticket = ticket


#: Looks a ticket up: (our id or None, the CAD's id or None) (`Tickets.cad_id`).
Lookup = Callable[[str], tuple[str | None, str | None]]


def resolve(lookup: Lookup, ticket: str) -> str:
    """The CAD's id of the call with that ticket, or `Unresolved`."""
    ours, cad = lookup(ticket)
    if ours is None:
        raise Unresolved(404, ticket, f"no call has the ticket {ticket}")
    if cad is None:
        raise Unresolved(409, ticket, f"call {ticket} is not in the CAD yet (it is queued); "
                         "retry once it is delivered")
    return cad


def swap_segments(segments: list[str], lookup: Lookup) -> list[str]:
    """The path's segments with every ticket replaced by the CAD's id."""
    return [resolve(lookup, s) if is_ticket(s) else s for s in segments]


def swap_body(raw: bytes, lookup: Lookup) -> bytes:
    """The body with every ticket in a ``callId``/``callIds`` member replaced; the same
    bytes when there is none (or the body is not JSON)."""
    if not _TICKETISH.search(raw):
        return raw
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    changed = [False]
    doc = _walk(doc, lookup, changed, 0)
    if not changed[0]:
        return raw
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _walk(node: Any, lookup: Lookup, changed: list[bool], depth: int) -> Any:
    if depth > MAX_DEPTH:
        return node
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for name, value in node.items():
            if name in CALL_ID_MEMBERS:
                values = value if isinstance(value, list) else None
                if values is not None:
                    value = [_swap(v, lookup, changed) for v in values]
                else:
                    value = _swap(value, lookup, changed)
            out[name] = _walk(value, lookup, changed, depth + 1)
        return out
    if isinstance(node, list):
        return [_walk(v, lookup, changed, depth + 1) for v in node]
    return node


def _swap(value: Any, lookup: Lookup, changed: list[bool]) -> Any:
    if not is_ticket(value):
        return value
    cad = resolve(lookup, str(value).strip())
    changed[0] = True
    if isinstance(value, int) and cad.isdigit():
        return int(cad)
    return cad
