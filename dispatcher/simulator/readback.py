"""Reading calls back and removing them: v1 get_calls and remove_911, v2 GET calls and DELETE.

Reading back needs the CAD's Plus plan: with ``Readback.enabled`` off, v1 get_calls answers
400 ``API ENDPOINT IS NOT ENABLED FOR THIS COMMUNITY`` and v2 GET answers a 403 problem.
The v1 and v2 checks of type, id, key, bearer and serverId are the create route's.

Behaviours that are our assumption, because the public record (CAD-API.md) is silent:
- Whether v1 lists ``metaData`` is undocumented: ``Readback.v1_metadata`` (default on).
- The v2 list keys are PascalCase in our notes, camelCase in the public docs repo:
  ``Readback.v2_casing`` ("pascal", the default, or "camel"); call fields stay camelCase.
- The data/query ``type``: 1 lists emergency calls only, 0 dispatch calls only, anything
  else (absent, 100) both; closed calls are never kept, so closedLimit/closedOffset only
  have to be integers (v2) and ``closedCalls`` is always empty.
- v1 get_calls reads only the first object of ``data``; remove_911 removes the call of
  every object. A missing serverId means server "1"; v1 does not check that the server
  is configured (an unknown one simply has no calls).
- Without the plan, v2 answers the 403 after checking the key, before the server id.
- v2 metaData values come back as strings (non-strings sent through v1 as their JSON
  text); ``updated`` is the creation time, as the simulator never updates a call.
- A dispatch call lists ``callId``, ``title``, ``address``, ``description`` and
  ``metaData.origin911Id`` (the 911 call's id, a string).
- remove_911 answers ``API ID(s) set!`` (the docs' text) for any callId, removed or not;
  a call is removed only from the list of the server named with it. v2 DELETE answers 404
  when the call is not in that server's list, and ints for numeric ids.
- The plan switch covers reading only; removing works without Plus.
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dispatcher.simulator.answers import Outcome, answer_json, answer_problem, answer_text
from dispatcher.simulator.api import Request, iso_z, v1_data, v2_refusal

CASINGS = ("pascal", "camel")
REMOVED_TEXT = "API ID(s) set!"
_NOT_ENABLED_V1 = "API ENDPOINT IS NOT ENABLED FOR THIS COMMUNITY"
_NOT_ENABLED_V2 = "API endpoint is not enabled for this community"
_INT_TEXT = re.compile(r"\s*-?[0-9]+\s*")
_FIELDS = ("isEmergency", "caller", "location", "description")

# Lists a server's calls: (records of its listed 911 calls, its dispatch calls).
Listing = Callable[[str], tuple[list[dict[str, Any]], list[dict[str, Any]]]]
# Takes a call off a server's emergency list (server id, call id); False when not listed.
Remove = Callable[[str, int], bool]


@dataclass(frozen=True)
class Readback:
    """How reading back behaves: the plan switch and the two undocumented shapes."""

    enabled: bool = True
    v1_metadata: bool = True
    v2_casing: str = "pascal"

    def switched(
        self, enabled: bool | None, v1_metadata: bool | None, v2_casing: str | None
    ) -> "Readback":
        """Return these settings with the given switches changed (None: unchanged)."""
        for name, value in (("enabled", enabled), ("v1_metadata", v1_metadata)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
        if v2_casing is not None and v2_casing not in CASINGS:
            raise ValueError(f"v2_casing must be one of {list(CASINGS)}")
        return Readback(
            self.enabled if enabled is None else enabled,
            self.v1_metadata if v1_metadata is None else v1_metadata,
            self.v2_casing if v2_casing is None else v2_casing,
        )


@dataclass(frozen=True)
class Cad:
    """What the checks of a request need: the configured credentials and server ids."""

    community_id: str
    api_key: str
    server_ids: tuple[str, ...]


def emergency_item(record: dict[str, Any], version: int, metadata: bool = True) -> dict[str, Any]:
    """Render a created call as the CAD lists it in v1 or v2."""
    call = record["call"]
    item: dict[str, Any] = {"callId": record["cad_id"]}
    for name in _FIELDS:
        item[name] = call.get(name, False if name == "isEmergency" else "")
    meta = call.get("metaData")
    meta = dict(meta) if isinstance(meta, dict) else {}
    if version == 2:
        item["metaData"] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
        item["updated"] = iso_z(record["at"])
    elif metadata:
        item["metaData"] = meta
    return item


def _wanted(kind: Any) -> tuple[bool, bool]:
    """Return whether a list type asks for (emergency calls, dispatch calls)."""
    return kind != 0, kind != 1


def answer_v1_read(req: Request, cad: Cad, readback: Readback, listing: Listing) -> Outcome:
    """Handle v1 get_calls."""
    data = v1_data(req.body, "GET_CALLS", cad.community_id, cad.api_key)
    if isinstance(data, Outcome):
        return data
    if not readback.enabled:
        return answer_text(400, _NOT_ENABLED_V1)
    query = data[0]
    server = query.get("serverId")
    emergency, dispatch = listing("1" if server is None else str(server))
    want_emergency, want_dispatch = _wanted(_as_int(query.get("type")))
    return answer_json(
        200,
        {
            "activeCalls": dispatch if want_dispatch else [],
            "emergencyCalls": [emergency_item(r, 1, readback.v1_metadata) for r in emergency]
            if want_emergency
            else [],
            "closedCalls": [],
        },
    )


def answer_v2_read(req: Request, cad: Cad, readback: Readback, listing: Listing) -> Outcome:
    """Handle v2 GET calls."""
    instance = urlsplit(req.target).path
    refusal = v2_refusal(req, cad.api_key, cad.server_ids)
    if refusal is not None and refusal.status == 401:
        return refusal
    if not readback.enabled:
        return answer_problem(403, _NOT_ENABLED_V2, instance)
    if refusal is not None:
        return refusal
    query = {k: v[-1] for k, v in parse_qs(urlsplit(req.target).query).items()}
    for name in ("closedLimit", "closedOffset", "type"):
        if name in query and _as_int(query[name]) is None:
            return answer_problem(400, f"The query parameter '{name}' must be an integer", instance)
    want_emergency, want_dispatch = _wanted(_as_int(query.get("type")))
    emergency, dispatch = listing(str(req.server_id))
    lists = {
        "ActiveCalls": dispatch if want_dispatch else [],
        "EmergencyCalls": [emergency_item(r, 2) for r in emergency] if want_emergency else [],
        "ClosedCalls": [],
        "ClosedCallCount": 0,
    }
    if readback.v2_casing == "camel":
        lists = {name[0].lower() + name[1:]: value for name, value in lists.items()}
    return answer_json(200, lists)


def answer_v1_remove(req: Request, cad: Cad, remove: Remove) -> Outcome:
    """Handle v1 remove_911: any 200 is done, whether or not the call was still listed."""
    data = v1_data(req.body, "REMOVE_911", cad.community_id, cad.api_key)
    if isinstance(data, Outcome):
        return data
    for item in data:
        server, call_id = item.get("serverId"), _as_int(item.get("callId"))
        if call_id is not None:
            remove("1" if server is None else str(server), call_id)
    return answer_text(200, REMOVED_TEXT)


def answer_v2_remove(req: Request, cad: Cad, remove: Remove) -> Outcome:
    """Handle v2 DELETE of a 911 call: 200 with the ids, 404 when it is not listed."""
    refusal = v2_refusal(req, cad.api_key, cad.server_ids)
    if refusal is not None:
        return refusal
    server_id, call_id = str(req.server_id), _as_int(req.call_id)
    if call_id is None or not remove(server_id, call_id):
        detail = f"Emergency call {req.call_id} was not found on server {server_id}"
        return answer_problem(404, detail, urlsplit(req.target).path)
    server_number = _as_int(server_id)
    return answer_json(
        200, {"callId": call_id, "serverId": server_id if server_number is None else server_number}
    )


def _as_int(value: Any) -> int | None:
    """Return an integer or the text of one as an int; None for anything else (a bool too)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    return None
