"""The ``web`` process: HTTP ingest (the seed's own request), metrics, health, ops page.

Two doors put calls in the queue; both answer only after every call is recorded in Redis.

``POST /emergency/call_911`` (v1, the seed) takes the seed's request body byte for byte
(``{"id", "key", "type": "CALL_911", "data": [call, ...]}``). ``type``, ``id`` and ``key``
are checked in that order against our configuration and refused with the seed's own
400 texts (``INVALID REQUEST TYPE``, ``INVALID COMMUNITY ID``, ``INVALID API KEY``).
Then every call in ``data`` is validated (`Call.parse`: the seed's call object or the
flat form; ``metaData.postal`` may be a number and is kept as its text) and only when
all are valid are they queued, in order. The answer is 200
``EMERGENCY CALL QUEUED ID: <id>[,<id>...]``: scripts that read ``ID:`` then the first
token keep working (our ids are ULIDs, not digits: see docs).

``POST /v2/emergency/servers/{serverId}/calls/911`` (v2) takes one call with
``Authorization: Bearer <key>``; ``metaData`` values are strings, as the v2 API wants.
Errors are ``application/problem+json`` (RFC 9457) with ``type``, ``title``,
``status``, ``detail``, ``instance`` and ``traceId`` (also ``field`` when one field is
wrong); success is 200 JSON with ``callId`` (our id) and ``status: "queued"``.

Decisions (also in the OpenAPI description served at ``/openapi.json``):

- Content-Type is not checked (the official resource sends ``application/json``;
  others send none or ``text/plain``); the body must be UTF-8 JSON (a BOM is allowed),
  one object, no duplicate names at any level, no ``NaN``/``Infinity``, integers within
  +-(2**53-1) and finite floats (I-JSON, RFC 7493), nesting at most `MAX_JSON_DEPTH`.
  Compressed bodies (``Content-Encoding``) get 415. Anything else wrong with the body
  gets 400 ``INVALID REQUEST BODY: <why>``.
- Limits: `MAX_BODY_BYTES` per request (413), `MAX_CALLS_PER_REQUEST` calls (400), and
  the per-call limits of `dispatcher.call`. Unknown top-level members of a v1 body are
  ignored (the CAD ignores them too); unknown members of a call are refused.
- One invalid call refuses the whole request (400 naming ``data[i]`` and the field),
  and nothing of it is queued: every call is validated before the first is queued.
- Redis failing part-way through a multi-call request: the calls queued before the
  failure stay queued (each is durable once recorded); the answer is 503 with
  ``Retry-After`` and names them. A retry queues them again unless the calls carry
  ``idempotencyKey`` or the request an ``Idempotency-Key`` header (call ``i`` of a v1
  request then gets the key ``<header>/<i>``; a v2 call gets ``<header>``): with either,
  a retry returns the same ids and the CAD gets each call once.
- The API key is compared in constant time and never appears in an answer or a log
  line (answers and logged texts pass through a redaction of the configured key). A
  call that contains the key anywhere (a field, a metaData name or value, the v2 path's
  serverId, the ``Idempotency-Key`` header) is refused with 400, since storing it would
  put the key in Redis, `dispatcher status` and the dead letters.
- 503 ``QUEUE FULL`` (backlog cap) is not ``QUEUE UNAVAILABLE`` (`dispatcher.http.doorrules`);
  429 per source address (`dispatcher.http.throttle`); refusals are logged once a minute per
  source (`dispatcher.http.refusals`), the address as `dispatcher.http.clientaddr` believes it.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Response as BaseResponse

from dispatcher.call import Call
from dispatcher.errors import InvalidCall, QueueFull, QueueUnavailable
from dispatcher.http import clientaddr, doorrules
from dispatcher.http.body import MAX_JSON_DEPTH, BadBody, parse_body
from dispatcher.http.openapi import openapi_document
from dispatcher.http.opspage import ops_blueprint
from dispatcher.http.refusals import RefusalLog
from dispatcher.http.throttle import IngestRate, Verdict
from dispatcher.producer import Producer
from dispatcher.redact import LineRedactor as _Redactor
from dispatcher.redact import holds_secret as _holds
from dispatcher.settings import Settings

log = logging.getLogger("dispatcher.web")

V1_PATH = "/emergency/call_911"
V2_PATH = "/v2/emergency/servers/<server_id>/calls/911"

#: Largest request body accepted (413 beyond it). 50 calls of a few KiB fit easily.
MAX_BODY_BYTES = 256 * 1024
#: Most calls in one v1 request's ``data`` array (400 beyond it).
MAX_CALLS_PER_REQUEST = 50
#: Longest ``Idempotency-Key`` header (the per-call key adds ``/<index>``).
MAX_IDEMPOTENCY_HEADER = 128
#: What a client should wait before retrying when the queue is unreachable.
RETRY_AFTER_S = 5
#: The WSGI server's own cap on a body (it buffers bodies before the app runs); bodies
#: between MAX_BODY_BYTES and this get our 413 text, larger ones the server's 413.
SERVER_MAX_BODY_BYTES = 4 * MAX_BODY_BYTES
#: Longest error detail in an answer (names of unknown fields can be long).
MAX_DETAIL_CHARS = 300

#: Why a call that contains the API key is refused (the contract: nothing stores it).
KEY_IN_CALL = ("the call contains the API key; it would be stored and shown with the call, "
               "so it is refused: remove it")

_TEXT = "text/plain"
_PROBLEM = "application/problem+json"
_JSON = "application/json"


# -- answers ------------------------------------------------------------------------------

def _text(body: str, status: int, **headers: str) -> Response:
    return Response(body, status=status, mimetype=_TEXT, headers=headers)


def _same(given: Any, expected: str | None) -> bool:
    """Constant-time comparison of a presented credential with the configured one."""
    if not isinstance(given, str) or not expected:
        return False
    try:
        presented = given.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate cannot equal a configured value
        return False
    return hmac.compare_digest(presented, expected.encode("utf-8"))


def _idempotency_header() -> str | None:
    """The request's ``Idempotency-Key`` header, checked; None when absent."""
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    value = value.strip().strip('"')
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_HEADER or not all(
        "!" <= ch <= "~" for ch in value
    ):
        raise BadBody(f"the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_HEADER} "
                      "printable ASCII characters without spaces")
    return value


def _with_key(call: Call, key: str | None) -> Call:
    """The call with the header-derived idempotency key, unless it carries its own."""
    if key is None or call.idempotency_key is not None:
        return call
    return dataclasses.replace(call, idempotency_key=key)


# -- the app -------------------------------------------------------------------------------

def create_app(settings: Settings, producer: Producer | None = None) -> Flask:
    """The Flask app; one Producer (one Redis pool, one Celery publisher) per process."""
    # Named "dispatcher" (its logger); templates/ and static/ live beside this module.
    app = Flask("dispatcher", root_path=str(Path(__file__).parent))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    clientaddr.install(app, settings.trusted_proxies)
    # Never a local spool (DISPATCHER_SPOOL_DIR): the door answers 503, clients retry.
    prod = producer or Producer(settings.with_(spool_dir=None))
    client: redis.Redis = prod.client
    key = settings.api_key.reveal() if settings.api_key else None
    community = settings.community_id
    safe = _Redactor([key or ""])
    refusals = RefusalLog(log)
    rate = (IngestRate(client, settings.ingest_rate, settings.prefix)
            if settings.ingest_rate else None)
    document = openapi_document(
        max_body_bytes=MAX_BODY_BYTES, max_calls=MAX_CALLS_PER_REQUEST,
        max_depth=MAX_JSON_DEPTH, retry_after_s=RETRY_AFTER_S,
        max_idempotency_header=MAX_IDEMPOTENCY_HEADER, server_max_body_bytes=SERVER_MAX_BODY_BYTES,
    )
    document_bytes = json.dumps(document, indent=2).encode()

    def client_addr() -> str:
        return clientaddr.client_address(request)

    def problem(status: int, title: str, detail: str, field: str | None = None,
                **headers: str) -> Response:
        trace = uuid.uuid4().hex
        body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                                "detail": safe(detail), "instance": safe(request.path),
                                "traceId": trace}
        if field is not None:
            body["field"] = safe(field, 100)
        refusals.refused(client_addr(), f"http v2: {status} {body['detail']} (trace {trace})",
                         logging.WARNING if status >= 500 else logging.INFO)
        return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=_PROBLEM,
                        headers=headers)

    def refuse(text: str, status: int = 400, **headers: str) -> Response:
        text = safe(text, MAX_DETAIL_CHARS + 40)
        refusals.refused(client_addr(), f"http v1: {status} {text}", logging.INFO)
        return _text(text, status, **headers)

    def too_fast() -> Verdict | None:
        return None if rate is None else rate.refusal(client_addr())

    def enqueue_all(calls: list[Call]
                    ) -> tuple[list[str], QueueUnavailable | QueueFull | InvalidCall | None]:
        """Queue calls in order; stop at the first failure (returns the ids queued)."""
        ids: list[str] = []
        for call in calls:
            try:
                ids.append(prod.enqueue(call, "http"))
            except (QueueUnavailable, QueueFull, InvalidCall) as exc:
                return ids, exc
            except redis.RedisError as exc:  # bounded() translates the usual ones
                return ids, QueueUnavailable(f"the queue (Redis) failed: {type(exc).__name__}")
        return ids, None

    @app.post(V1_PATH)
    def call_911() -> Response:
        if not community or not key:
            return refuse("DISPATCHER NOT CONFIGURED: SONORAN_COMMUNITY_ID AND SONORAN_API_KEY "
                          "MUST BE SET", 503)
        slow_down = too_fast()
        if slow_down is not None:
            return refuse(f"TOO MANY REQUESTS: at most {settings.ingest_rate:g} per second from "
                          f"one address (DISPATCHER_INGEST_RATE); retry in "
                          f"{slow_down.retry_after_s} s", 429,
                          **{"Retry-After": str(slow_down.retry_after_s)})
        try:
            body = parse_body(doorrules.read_body(request))
            header_key = _idempotency_header()
        except BadBody as exc:
            return refuse(f"INVALID REQUEST BODY: {exc}")
        in_request = doorrules.key_outside_body(key, None, header_key)
        if in_request:
            return refuse(f"INVALID REQUEST: {in_request}")
        if body.get("type") != "CALL_911":
            return refuse("INVALID REQUEST TYPE")
        if not _same(body.get("id"), community):
            return refuse("INVALID COMMUNITY ID")
        if not _same(body.get("key"), key):
            return refuse("INVALID API KEY")
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
            if _holds(obj, key):
                return refuse(f"INVALID CALL: data[{i}]: {KEY_IN_CALL}")
            calls.append(_with_key(call, f"{header_key}/{i}" if header_key else None))
        ids, failure = enqueue_all(calls)
        if isinstance(failure, InvalidCall) and not ids:  # the producer's own last check
            return refuse(f"INVALID CALL: data[0]: {failure}")
        if failure is not None:
            status, wait = doorrules.failure_status(failure, RETRY_AFTER_S)
            text = f"{doorrules.failure_title(failure)}: "
            text += (f"data[{len(ids)}]: {failure}." if isinstance(failure, InvalidCall)
                     else f"{doorrules.sentence(failure)} Retry in {wait} s.")
            if ids:
                text += (f" {len(ids)} of {len(calls)} calls were queued before the failure "
                         f"(data[0..{len(ids) - 1}], ID: {','.join(ids)}); the others were not."
                         " A retry queues those again unless the calls carry idempotencyKey"
                         " or the request an Idempotency-Key header.")
            else:
                text += " No call of this request was queued."
            text = safe(text, 4000)  # room for 50 ids
            refusals.refused(client_addr(), f"http v1: {status} {text}", logging.WARNING)
            headers = {"Retry-After": str(wait)} if status == 503 else {}
            return _text(text, status, **headers)
        log.debug("http v1: queued %d call(s) from %s: %s", len(ids), client_addr(),
                 ",".join(ids))
        return _text("EMERGENCY CALL QUEUED ID: " + ",".join(ids), 200)

    @app.post(V2_PATH)
    def call_911_v2(server_id: str) -> Response:
        if not key:
            return problem(503, "Service Unavailable",
                           "the dispatcher is not configured: SONORAN_API_KEY must be set")
        slow_down = too_fast()
        if slow_down is not None:
            return problem(429, "Too Many Requests",
                           f"at most {settings.ingest_rate:g} requests per second from one "
                           f"address (DISPATCHER_INGEST_RATE); retry in "
                           f"{slow_down.retry_after_s} s",
                           **{"Retry-After": str(slow_down.retry_after_s)})
        in_path = doorrules.key_outside_body(key, server_id, None)
        if in_path:  # before the Authorization check: never echo a path that holds it
            return problem(400, "Bad Request", in_path, field="serverId")
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not _same(token.strip(), key):
            return problem(401, "Unauthorized", "Invalid or missing API key",
                           **{"WWW-Authenticate": 'Bearer realm="sonoran-dispatcher"'})
        try:
            body = parse_body(doorrules.read_body(request))
            header_key = _idempotency_header()
        except BadBody as exc:
            return problem(400, "Bad Request", str(exc))
        in_header = doorrules.key_outside_body(key, None, header_key)
        if in_header:
            return problem(400, "Bad Request", in_header)
        try:
            doorrules.v2_check(body)
            call = Call.parse({**body, "serverId": server_id})
        except InvalidCall as exc:
            return problem(400, "Bad Request", str(exc), field=exc.field)
        if _holds(body, key):
            return problem(400, "Bad Request", KEY_IN_CALL)
        ids, failure = enqueue_all([_with_key(call, header_key)])
        if isinstance(failure, InvalidCall):
            return problem(400, "Bad Request", str(failure))
        if failure is not None:
            _, wait = doorrules.failure_status(failure, RETRY_AFTER_S)
            full = "queue full: " if isinstance(failure, QueueFull) else ""
            return problem(503, "Service Unavailable", f"{full}{doorrules.sentence(failure)} "
                           f"The call was not queued; retry in {wait} s.",
                           **{"Retry-After": str(wait)})
        (call_id,) = ids
        log.debug("http v2: queued 1 call from %s: %s", client_addr(), call_id)
        answer = {"callId": call_id, "status": "queued", **call.to_cad()}
        answer["serverId"] = server_id
        return Response(json.dumps(answer, ensure_ascii=False), status=200, mimetype=_JSON)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return Response(document_bytes, mimetype=_JSON)

    app.register_blueprint(ops_blueprint(settings, client))

    def error_for(status: int, text: str) -> Callable[[Any], Response]:
        def handler(exc: Any) -> Response:
            if request.path.startswith("/v2/"):
                return problem(status, _title(exc, status), text)
            return _text(text, status)
        return handler

    app.register_error_handler(
        413, error_for(413, f"REQUEST TOO LARGE: at most {MAX_BODY_BYTES} bytes"))
    app.register_error_handler(404, error_for(404, "NOT FOUND"))

    @app.errorhandler(405)
    def not_allowed(exc: MethodNotAllowed) -> Response:
        allow = ", ".join(sorted(exc.valid_methods or []))
        if request.path.startswith("/v2/"):
            return problem(405, "Method Not Allowed", f"use {allow}", Allow=allow)
        return _text("METHOD NOT ALLOWED", 405, Allow=allow)

    @app.errorhandler(doorrules.Unsupported)
    def unsupported(exc: doorrules.Unsupported) -> Response:
        text = f"UNSUPPORTED CONTENT ENCODING {exc}: send the body uncompressed"
        if request.path.startswith("/v2/"):
            return problem(415, "Unsupported Media Type", safe(text))
        return _text(safe(text), 415)

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> BaseResponse:
        if isinstance(exc, HTTPException):  # other 4xx raised by Flask/Werkzeug
            return exc.get_response()
        trace = uuid.uuid4().hex
        detail = "".join(traceback.format_exception(exc))
        log.error("http: internal error (trace %s): %s", trace, safe(detail, 20_000))
        if request.path.startswith("/v2/"):
            return problem(500, "Internal Server Error", f"internal error (trace {trace})")
        return _text(f"INTERNAL ERROR (trace {trace})", 500)

    return app


def _title(exc: Any, status: int) -> str:
    name = getattr(exc, "name", None)
    return str(name) if name else str(status)
