"""The doors that take calls back: the CAD's own REMOVE_911 (v1) and DELETE (v2) requests.

``POST /emergency/remove_911`` takes the CAD's body (``{"id", "key", "type":
"REMOVE_911", "data": [{"serverId", "callId"}, ...]}``), checked like the create door
(the seed's 400 texts, in the same order); ``DELETE
/v2/emergency/servers/{serverId}/calls/911/{callId}`` takes ``Authorization: Bearer``.
``callId`` is our id, its ticket or the CAD's id of a call we delivered. Every id is
looked up before any call is taken back; an unknown one refuses the request (404), so a
request takes back all of its calls or none. What taking back means (cancelled,
removing, pending) is `dispatcher.takeback`'s; the answer says it per call.

v1 answers 200 ``EMERGENCY CALL REMOVAL QUEUED ID: <callId>[,...]`` (text, like the
create door's) with ``X-Dispatcher-Status`` giving what happened to each, in order; v2
answers 200 JSON ``{"callId", "serverId", "id", "status"}`` like the CAD's own answer
(``{"callId", "serverId"}``) plus ours.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, current_app, request

from dispatcher.errors import QueueUnavailable
from dispatcher.http import doorrules
from dispatcher.http.body import BadBody, parse_body
from dispatcher.http.ingest import MAX_CALLS_PER_REQUEST, RETRY_AFTER_S, Door, door, plain
from dispatcher.takeback import TakeBack, TakeBacks, UnknownCall

V1_REMOVE_PATH = "/emergency/remove_911"
V2_REMOVE_PATH = "/v2/emergency/servers/<server_id>/calls/911/<call_id>"
EXTENSION = "dispatcher.takebacks"


def install(app: Flask) -> None:
    """Mount both removal doors (after the create doors: they share the `Door`)."""
    d = app.extensions["dispatcher.door"]
    # Per community (its own keys): a request takes back only its community's calls.
    app.extensions[EXTENSION] = {
        name: TakeBacks(one.producer.client, one.settings.prefix)
        for name, one in (d.doors or {"default": d}).items()}
    app.add_url_rule(V1_REMOVE_PATH, view_func=remove_911, methods=["POST"])
    app.add_url_rule(V2_REMOVE_PATH, view_func=remove_911_v2, methods=["DELETE"])


def _takebacks(d: Door) -> TakeBacks:
    """The take-backs of the community whose door ``d`` is."""
    by_name: dict[str, TakeBacks] = current_app.extensions[EXTENSION]
    name = d.member.name if d.member is not None else "default"
    found = by_name.get(name)
    if found is None or found.keys.prefix != d.settings.prefix:  # added by a reload
        found = by_name[name] = TakeBacks(d.producer.client, d.settings.prefix)
    return found


def _id_text(value: Any) -> str | None:
    """A callId as given (a positive integer, or our id as a string), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return str(value)
    if isinstance(value, str) and 0 < len(value.strip()) <= 64:
        return value.strip()
    return None


def _as_given(text: str) -> int | str:
    return int(text) if text.isdigit() and len(text) < 19 else text


def remove_911() -> Response:
    """``POST /emergency/remove_911``: take back every call named in ``data``."""
    d = door()
    refuse = d.refuse
    unconfigured = d.unconfigured()
    if unconfigured is not None:
        return unconfigured
    try:
        body = parse_body(doorrules.read_body(request))
    except BadBody as exc:
        return refuse(f"INVALID REQUEST BODY: {exc}")
    picked = d.pick_v1(body, "REMOVE_911")
    if isinstance(picked, Response):
        return picked
    d = picked
    data = body.get("data")
    if not isinstance(data, list) or not data or len(data) > MAX_CALLS_PER_REQUEST:
        return refuse(f"INVALID REQUEST: data must be an array of 1 to {MAX_CALLS_PER_REQUEST}"
                      " objects with a callId")
    given: list[str] = []
    for i, item in enumerate(data):
        call_id = _id_text(item.get("callId")) if isinstance(item, dict) else None
        if call_id is None:
            return refuse(f"INVALID REQUEST: data[{i}]: callId must be a positive integer "
                          "(the CAD's id) or our call id")
        given.append(call_id)
    try:
        done = _take_back_all(d, given)
    except UnknownCall as exc:
        return refuse(f"CALL NOT FOUND: {exc}", 404)
    except QueueUnavailable as exc:
        return refuse(f"QUEUE UNAVAILABLE: {doorrules.sentence(exc)} Nothing was taken back; "
                      f"retry in {RETRY_AFTER_S} s.", 503, **{"Retry-After": str(RETRY_AFTER_S)})
    return plain("EMERGENCY CALL REMOVAL QUEUED ID: " + ",".join(given), 200,
                 **{"X-Dispatcher-Status": ",".join(done)})


def remove_911_v2(server_id: str, call_id: str) -> Response:
    """``DELETE /v2/emergency/servers/{serverId}/calls/911/{callId}``: take back one call."""
    d = door()
    problem = d.problem
    if not d.key:
        return problem(503, "Service Unavailable",
                       "the dispatcher is not configured: SONORAN_API_KEY must be set")
    in_path = d.key_outside(f"{server_id}/{call_id}", None)
    if in_path:
        return problem(400, "Bad Request", in_path)
    picked = d.pick_bearer()
    if isinstance(picked, Response):
        return picked
    d = picked
    given = _id_text(call_id)
    if given is None:
        return problem(400, "Bad Request", "callId must be a positive integer (the CAD's id) "
                       "or our call id", field="callId")
    try:
        (ours, done), = _take_back_pairs(d, [given])
    except UnknownCall as exc:
        return problem(404, "Not Found", str(exc), field="callId")
    except QueueUnavailable as exc:
        return problem(503, "Service Unavailable", f"{doorrules.sentence(exc)} Nothing was "
                       f"taken back; retry in {RETRY_AFTER_S} s.",
                       **{"Retry-After": str(RETRY_AFTER_S)})
    answer = {"callId": _as_given(given), "serverId": _as_given(server_id), "id": ours,
              "status": done}
    return Response(json.dumps(answer), status=200, mimetype="application/json")


def _take_back_all(d: Door, given: list[str]) -> list[TakeBack]:
    return [done for _, done in _take_back_pairs(d, given)]


def _take_back_pairs(d: Door, given: list[str]) -> list[tuple[str, TakeBack]]:
    """Look every id up first (an unknown one takes nothing back), then take each back."""
    tb = _takebacks(d)
    found = [tb.lookup(text) for text in given]
    return [(call_id, tb.take_back(call_id, text)) for call_id, text in
            zip(found, given, strict=True)]
