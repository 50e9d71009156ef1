"""The create routes of the door: ``POST /emergency/call_911`` (the seed's v1 body) and
``POST /v2/emergency/servers/{serverId}/calls/911`` (one call, Bearer key). Their
checks, answers and the `Door` they share are `dispatcher.http.ingest`'s.

`create_v1` and `create_v2` are the routes' whole logic, on an `Asked` (what a request
carries) and answering a `Reply`: the Flask views below call them, and so does the lean
path in front of Flask (`dispatcher.http.lean`), which serves the common request without
the framework. One logic, two ways in.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Response

from dispatcher.call import Call
from dispatcher.errors import InvalidCall, QueueFull, QueueUnavailable
from dispatcher.http import doorrules, prefer
from dispatcher.http.body import BadBody, parse_body
from dispatcher.http.ingest import (
    _JSON,
    CALL_ID_HEADER,
    KEY_IN_CALL,
    MAX_CALLS_PER_REQUEST,
    RETRY_AFTER_S,
    Asked,
    Door,
    Reply,
    _idempotency_header,
    _with_key,
    door,
    flask_asked,
    plain_reply,
    to_response,
)
from dispatcher.http.waiting import v1_answer, v2_answer

log = logging.getLogger("dispatcher.web")  # the door's logger, as in ingest


# -- v1: the seed's request ----------------------------------------------------------------

def call_911() -> Response:
    """``POST /emergency/call_911``: the seed's body; every call valid, then all queued."""
    return to_response(create_v1(door(), flask_asked()))


def create_v1(d: Door, asked: Asked) -> Reply:
    """`call_911`'s logic on any request."""

    def refuse(text: str, status: int = 400, **headers: str) -> Reply:
        return d.refusal(asked, text, status, **headers)

    unconfigured = d.unconfigured_reply(asked)
    if unconfigured is not None:
        return unconfigured
    try:
        body = parse_body(asked.read())
        header_key = _idempotency_header(asked)
    except BadBody as exc:
        return refuse(f"INVALID REQUEST BODY: {exc}")
    in_request = d.key_outside(None, header_key)
    if in_request:
        return refuse(f"INVALID REQUEST: {in_request}")
    picked = d.picked_v1(asked, body, "CALL_911")
    if isinstance(picked, Reply):
        return picked
    d = picked
    # after the key: a stranger cannot spend a server's budget
    slow_down = d.too_fast(asked.addr)
    if slow_down is not None:
        return refuse(f"TOO MANY REQUESTS: at most {d.settings.ingest_rate:g} per second from "
                      f"one address (DISPATCHER_INGEST_RATE); retry in "
                      f"{slow_down.retry_after_s} s", 429,
                      **{"Retry-After": str(slow_down.retry_after_s)})
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return refuse("INVALID CALL: data must be a non-empty array of call objects")
    if len(data) > MAX_CALLS_PER_REQUEST:
        return refuse(f"INVALID CALL: data holds {len(data)} calls; at most "
                      f"{MAX_CALLS_PER_REQUEST} calls per request")
    calls: list[Call] = []
    for i, obj in enumerate(data):  # all are validated before any is queued
        try:
            call = Call.parse(obj)
        except InvalidCall as exc:
            return refuse(f"INVALID CALL: data[{i}]: {exc}")
        if d.holds_key(obj):
            return refuse(f"INVALID CALL: data[{i}]: {KEY_IN_CALL}")
        calls.append(_with_key(call, f"{header_key}/{i}" if header_key else None))
    seconds = prefer.wait_seconds(_prefer(asked))
    waits = d.wait_for(seconds)
    ids, tickets, failure = d.enqueue_all(calls, notify=waits)
    if isinstance(failure, InvalidCall) and not ids:  # the producer's own last check
        return refuse(f"INVALID CALL: data[0]: {failure}")
    if failure is not None:
        return _v1_failure(d, asked, failure, tickets, len(calls))
    log.debug("http v1: queued %d call(s) from %s: %s", len(ids), asked.addr,
              ",".join(ids))
    version = d.settings.api_version
    cad = d.waited(ids, seconds, lambda outs: v1_answer(outs, version)) if waits else None
    if cad is not None:
        return cad
    return plain_reply("EMERGENCY CALL QUEUED ID: " + ",".join(tickets), 200,
                       **{CALL_ID_HEADER: ",".join(ids)})


def _prefer(asked: Asked) -> list[str]:
    """The request's ``Prefer`` values (the WSGI server joins repeated headers)."""
    value = asked.header("Prefer")
    return [] if value is None else [value]


def _v1_failure(d: Door, asked: Asked, failure: QueueUnavailable | QueueFull | InvalidCall,
                ids: list[str], total: int) -> Reply:
    """The v1 answer when queueing stopped part-way: which calls are in (``ids``: their
    tickets), which are not."""
    status, wait = doorrules.failure_status(failure, RETRY_AFTER_S)
    text = f"{doorrules.failure_title(failure)}: "
    text += (f"data[{len(ids)}]: {failure}." if isinstance(failure, InvalidCall)
             else f"{doorrules.sentence(failure)} Retry in {wait} s.")
    if ids:
        text += (f" {len(ids)} of {total} calls were queued before the failure "
                 f"(data[0..{len(ids) - 1}], ID: {','.join(ids)}); the others were not."
                 " A retry queues those again unless the calls carry idempotencyKey"
                 " or the request an Idempotency-Key header.")
    else:
        text += " No call of this request was queued."
    text = d.safe(text, 4000)  # room for 50 ids
    d.refusals.refused(asked.addr, f"http v1: {status} {text}", logging.WARNING)
    headers = {"Retry-After": str(wait)} if status == 503 else {}
    return plain_reply(text, status, **headers)


# -- v2: one call, Bearer key, problem+json ------------------------------------------------

def call_911_v2(server_id: str) -> Response:
    """``POST /v2/emergency/servers/{serverId}/calls/911``: one call, queued."""
    return to_response(create_v2(door(), flask_asked(), server_id))


def create_v2(d: Door, asked: Asked, server_id: str) -> Reply:
    """`call_911_v2`'s logic on any request."""

    def problem(status: int, title: str, detail: str, field: str | None = None,
                **headers: str) -> Reply:
        return d.problem_reply(asked, status, title, detail, field, **headers)

    if not d.key:
        return problem(503, "Service Unavailable",
                       "the dispatcher is not configured: SONORAN_API_KEY must be set")
    in_path = d.key_outside(server_id, None)
    if in_path:  # before the Authorization check: never echo a path that holds it
        return problem(400, "Bad Request", in_path, field="serverId")
    picked = d.picked_bearer(asked)
    if isinstance(picked, Reply):
        return picked
    d = picked
    # after the key: a stranger cannot spend a server's budget
    slow_down = d.too_fast(asked.addr)
    if slow_down is not None:
        return problem(429, "Too Many Requests",
                       f"at most {d.settings.ingest_rate:g} requests per second from one "
                       f"address (DISPATCHER_INGEST_RATE); retry in "
                       f"{slow_down.retry_after_s} s",
                       **{"Retry-After": str(slow_down.retry_after_s)})
    try:
        body = parse_body(asked.read())
        header_key = _idempotency_header(asked)
    except BadBody as exc:
        return problem(400, "Bad Request", str(exc))
    in_header = d.key_outside(None, header_key)
    if in_header:
        return problem(400, "Bad Request", in_header)
    try:
        call = Call.parse({**doorrules.v2_body(body), "serverId": server_id})
    except InvalidCall as exc:
        return problem(400, "Bad Request", str(exc), field=exc.field)
    if d.holds_key(body):
        return problem(400, "Bad Request", KEY_IN_CALL)
    seconds = prefer.wait_seconds(_prefer(asked))
    waits = d.wait_for(seconds)
    ids, tickets, failure = d.enqueue_all([_with_key(call, header_key)], notify=waits)
    if isinstance(failure, InvalidCall):
        return problem(400, "Bad Request", str(failure))
    if failure is not None:
        _, wait = doorrules.failure_status(failure, RETRY_AFTER_S)
        full = "queue full: " if isinstance(failure, QueueFull) else ""
        return problem(503, "Service Unavailable", f"{full}{doorrules.sentence(failure)} "
                       f"The call was not queued; retry in {wait} s.",
                       **{"Retry-After": str(wait)})
    (call_id,) = ids
    log.debug("http v2: queued 1 call from %s: %s", asked.addr, call_id)
    fields = call.to_cad()
    cad = d.waited(ids, seconds,
                   lambda outs: v2_answer(outs[0], fields, server_id)) if waits else None
    if cad is not None:
        return cad
    (ticket,) = tickets
    # callId is the ticket, a number like the CAD's ids; id is ours (the ULID).
    answer: dict[str, Any] = {"callId": int(ticket) if ticket.isdigit() else ticket,
                              "id": call_id, "status": "queued", **fields}
    answer["serverId"] = server_id
    return Reply(200, json.dumps(answer, ensure_ascii=False), _JSON, {CALL_ID_HEADER: call_id})
