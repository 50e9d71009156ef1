"""The OpenAPI 3.1 description of the ``web`` process, served at ``GET /openapi.json``.

Built from the same constants the code enforces (`dispatcher.call` limits and the web
limits passed in), so the description cannot drift from the behaviour. Schemas are
JSON Schema 2020-12 (OpenAPI 3.1's dialect); the tests validate requests and answers
against them.
"""

from __future__ import annotations

from typing import Any

from dispatcher import call as limits
from dispatcher.http.prefer import MAX_WAIT_S

#: Characters refused in every text field: control characters other than tab, LF, CR.
_NO_CONTROL = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F]*$"
#: A call id: a 26-character ULID (Crockford base32).
_ID = "[0-9A-HJKMNP-TV-Z]{26}"
#: A ticket (dispatcher.tickets): 16 digits from 9000000000000001.
_TICKET = "9[0-9]{15}"


_EXTRA = {"description": "Any other member is kept as given and sent to the CAD with the "
                          f"call (coords, future fields): at most {limits.MAX_EXTRA_FIELDS} "
                          f"such members, names 1 to {limits.MAX_EXTRA_NAME} characters, "
                          "values any JSON; they count towards the call's size."}
_NAMES = {"minLength": 1, "maxLength": limits.MAX_EXTRA_NAME}


#: The note on every other path of the CAD's API (`dispatcher.http.passthrough`).
_PASSTHROUGH = (
    "Passthrough: any other request under the CAD API's paths (v1 `POST /general/*`, "
    "`/civilian/*`, `/emergency/*`; `GET`, `POST`, `PUT`, `PATCH`, `DELETE` under `/v2/`) "
    "that is not described here is passed to the configured CAD (SONORAN_API_URL) with the "
    "client's own credentials, and the CAD's answer returned unchanged (status, body, "
    "Content-Type, Retry-After), streamed, so one base URL serves the whole CAD API. A "
    "ticket of ours in the path or in `callId`/`callIds` becomes the CAD's id once the "
    "call is delivered; before that 409, unknown 404. Beyond the share of the CAD's "
    "per-key, per-endpoint budget left after our own sends and read-backs: 429 with "
    "Retry-After; while our breaker is open: 503 with Retry-After; the CAD unreachable or "
    "too slow: 502/504. Those answers of ours are text/plain on v1 paths and "
    "problem+json under /v2/. Paths with empty, `.` or `..` segments get 400."
)


def _text(limit: int, description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limit, "pattern": _NO_CONTROL,
            "not": {"pattern": "^\\s*$"}, "description": description}


def _call_properties(v2: bool) -> dict[str, Any]:
    if v2:
        postal_type: dict[str, Any] = {}  # any JSON value, sent as its text
        plate_type: dict[str, Any] = {}
        values: dict[str, Any] = {}
        note = ("the CAD's v2 values are strings: any other value is sent as its text, as "
                "the official resource's Lua tostring gives it (true -> \"true\", 12 -> "
                "\"12\", 1.5 -> \"1.5\"; an object or array -> its JSON text; null -> "
                "the key is left out)")
    else:
        postal_type = {"type": ["string", "integer", "null"]}
        plate_type = {"type": ["string", "null"]}
        values = {}
        note = ("`postal` and `plate` are strings in practice (`\"2000\"`, `\"7015a\"`); "
                "a number as postal is kept as its text")
    return {
        "caller": _text(limits.MAX_CALLER, "Name of the caller."),
        "location": _text(limits.MAX_LOCATION, "Street(s) name."),
        "description": _text(limits.MAX_DESCRIPTION, "Call description."),
        "isEmergency": {"type": "boolean", "default": True,
                        "description": "EMERGENCY (true) or CIVIL (false) in the CAD."},
        "metaData": {
            "type": ["object", "null"],
            "maxProperties": limits.MAX_META_KEYS,
            "propertyNames": {"minLength": 1, "maxLength": limits.MAX_META_KEY},
            "properties": {
                "postal": {**postal_type, "maxLength": limits.MAX_POSTAL,
                           "pattern": _NO_CONTROL},
                "plate": {**plate_type, "maxLength": limits.MAX_PLATE, "pattern": _NO_CONTROL},
            },
            "additionalProperties": values,
            "description": "Free key/values sent to the CAD as given; " + note + ". Custom "
                           "keys (priority, block, code, x, y, ...) pass through.",
        },
        "deleteAfterMinutes": {"type": ["integer", "null"], "minimum": 0,
                               "maximum": limits.MAX_DELETE_AFTER_MINUTES},
        "deleteAfter": {"type": ["integer", "null"],
                        "description": "Older official resources' name of "
                                       "deleteAfterMinutes; renamed (deleteAfterMinutes wins "
                                       "when both are given)."},
        "idempotencyKey": {
            "type": ["string", "null"], "minLength": 1, "maxLength": limits.MAX_IDEMPOTENCY_KEY,
            "pattern": _NO_CONTROL,
            "description": "Ours, not the CAD's: the same key (within a day) yields the same "
                           "call id and one CAD call, so a client may retry safely.",
        },
    }


def _call_schema() -> dict[str, Any]:
    props = _call_properties(v2=False)
    props["serverId"] = {
        "type": ["integer", "string", "null"], "minimum": 0, "maximum": 2**31 - 1,
        "minLength": 1,
        "maxLength": limits.MAX_SERVER_ID, "pattern": _NO_CONTROL,
        "description": "The official resource sends the string \"1\"; kept as given. "
                       "Default: SONORAN_SERVER_ID.",
    }
    props["postal"] = {"type": ["string", "integer", "null"], "maxLength": limits.MAX_POSTAL,
                       "pattern": _NO_CONTROL,
                       "description": "Flat form: the same as metaData.postal."}
    props["plate"] = {"type": ["string", "null"], "maxLength": limits.MAX_PLATE,
                      "pattern": _NO_CONTROL,
                      "description": "Flat form: the same as metaData.plate."}
    return {
        "type": "object",
        "description": "A call object exactly as the seed sends it in `data`, or the flat "
                       "form (`postal`/`plate` beside the other fields). null means absent in "
                       "serverId, metaData, postal, plate, deleteAfterMinutes and "
                       "idempotencyKey (not in isEmergency). At most "
                       f"{limits.MAX_CALL_BYTES} bytes of JSON as sent to the CAD.",
        "required": ["caller", "location", "description"],
        "properties": props,
        "propertyNames": _NAMES,
        "additionalProperties": _EXTRA,
    }


def _v2_call_schema() -> dict[str, Any]:
    props = _call_properties(v2=True)
    props["serverId"] = {"description": "Ignored: the path's serverId is used."}
    return {
        "type": "object",
        "description": "One call, v2 shape: metaData values are strings.",
        "required": ["caller", "location", "description"],
        "properties": props,
        "propertyNames": _NAMES,
        "additionalProperties": _EXTRA,
    }


def _text_answer(description: str, example: str, **extra: Any) -> dict[str, Any]:
    return {"description": description,
            "content": {"text/plain": {"schema": {"type": "string", **extra},
                                       "example": example}}}


def _problem(description: str, example_status: int, **headers: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"},
            "example": {"type": "about:blank", "title": "Bad Request",
                        "status": example_status, "detail": "caller is required",
                        "instance": "/v2/emergency/servers/1/calls/911",
                        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "field": "caller"}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _with_text(answer: dict[str, Any]) -> dict[str, Any]:
    answer["content"]["text/plain"] = {"schema": {"type": "string"}}
    return answer


def _prefer_header(max_wait_s: int) -> dict[str, Any]:
    return {
        "name": "Prefer", "in": "header", "required": False,
        "description": (
            f"`wait=N` (RFC 7240; N above {max_wait_s} is taken as {max_wait_s}, 0 or a bad "
            "value means no wait; other preferences are ignored): hold the answer until "
            "every call of the request has an outcome, or N seconds. If every call was "
            "delivered in time, the answer is the CAD's own: its status and text (v1: "
            "`EMERGENCY CALL ADDED ID: <the CAD's numeric id>`, the first call's when the "
            "request held several, also when the CAD speaks v2; v2: the CAD's JSON with its "
            "`callId`, or one built from that id). If the request's one call was refused "
            "for good in time (it is a dead letter `rejected`), the answer is the CAD's "
            "refusal: a v1 CAD's 400 text (`INVALID API KEY`, ...), a v2 CAD's 401 or 404 "
            "problem+json. Either way with `Preference-Applied: wait=N` (N as applied). "
            "Otherwise (not in time, several calls not all delivered, or the wait is "
            "unavailable) the usual queued answer, without Preference-Applied."),
        "schema": {"type": "string", "examples": ["wait=10", "respond-async, wait=30"]},
    }


def _answer_headers() -> dict[str, Any]:
    return {
        "X-Dispatcher-Call-Id": {
            "description": "Our call ids (ULIDs), comma-separated, in the order of the "
                           "request: `dispatcher status <id>`.",
            "schema": {"type": "string", "pattern": f"^{_ID}(,{_ID})*$"}},
        "Preference-Applied": {
            "description": "`wait=N` when the answer is the CAD's own (Prefer: wait).",
            "schema": {"type": "string", "pattern": "^wait=[0-9]+$"}},
    }


def openapi_document(*, max_body_bytes: int, max_calls: int, max_depth: int,
                     retry_after_s: int, max_idempotency_header: int,
                     server_max_body_bytes: int) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (a JSON-ready dict)."""
    beyond = (f" Beyond {server_max_body_bytes} bytes the HTTP server itself refuses the "
              "body, with a short text/plain answer.")
    retry_after = {"Retry-After": {
        "description": f"Seconds to wait before retrying ({retry_after_s} when the queue is "
                       "unreachable, longer when it is full).",
        "schema": {"type": "integer", "minimum": 1}}}
    too_many = ("More requests from this address than DISPATCHER_INGEST_RATE allows (per "
                "second; the address is the X-Forwarded-For one only behind trusted "
                "proxies). Nothing was queued; Retry-After says when to try again.")
    idem_header = {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Makes a retry safe: calls without their own idempotencyKey get "
                       "`<header>/<index>` (v1) or `<header>` (v2) as their key.",
        "schema": {"type": "string", "minLength": 1, "maxLength": max_idempotency_header,
                   "pattern": "^[!-~]+$"},
    }
    prefer_header = _prefer_header(MAX_WAIT_S)
    answer_headers = _answer_headers()
    body_rules = (
        f"The body: at most {max_body_bytes} bytes (413 beyond), UTF-8 JSON (a BOM is "
        "allowed), one object, no duplicate member names, no NaN/Infinity, integers within "
        f"+-(2^53-1), nesting at most {max_depth} levels; any Content-Type (the official "
        "resource sends application/json); no Content-Encoding (415)."
    )
    v1_errors = [
        "INVALID REQUEST BODY: <why>", "INVALID REQUEST TYPE", "INVALID COMMUNITY ID",
        "INVALID API KEY", "INVALID CALL: data must be a non-empty array of call objects",
        f"INVALID CALL: data holds <n> calls; at most {max_calls} calls per request",
        "INVALID CALL: data[<i>]: <field> <why>",
        "INVALID REQUEST: the Idempotency-Key header contains the API key; ...",
    ]
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "sonoran-dispatcher",
            "version": "1",
            "summary": "A durable queue in front of the Sonoran CAD 911-call API.",
            "description": (
                "Drop-in doors for game servers: the same requests as the Sonoran CAD "
                "API's own 911-call endpoints, answered as soon as the calls are durably "
                "queued. A worker then delivers each call to the CAD exactly once, with "
                "retries, rate limiting and dead letters.\n\n" + body_rules + "\n\n"
                "One invalid call refuses the whole request and nothing of it is queued. "
                "If the queue fails part-way through a multi-call request, the 503 names "
                "the calls already queued; use idempotency keys to retry safely.\n\n"
                + _PASSTHROUGH
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": {
            "/emergency/call_911": {"post": {
                "operationId": "call911V1",
                "summary": "Queue 911 calls (v1, the seed's request byte for byte)",
                "description": "`type`, `id` and `key` are checked in that order against "
                               "SONORAN_COMMUNITY_ID and SONORAN_API_KEY. " + body_rules,
                "parameters": [idem_header, prefer_header],
                "requestBody": {"required": True, "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/CallRequestV1"},
                        "example": {
                            "id": "my-community", "key": "<api key>", "type": "CALL_911",
                            "data": [{"serverId": "1", "isEmergency": True,
                                      "caller": "Jane Doe",
                                      "location": "Route 68 / Joshua Rd",
                                      "description": "Two-car collision",
                                      "metaData": {"plate": "8ABC123", "postal": "350"}}]}},
                }},
                "responses": {
                    "200": {**_text_answer(
                        "Every call is queued; their tickets (numbers above 9e15 that "
                        "status and removal accept; our own ids are in "
                        "X-Dispatcher-Call-Id) in the order of `data`. With Prefer: "
                        "wait, when every call was delivered in time: the CAD's own text "
                        "`EMERGENCY CALL ADDED ID: <the CAD's numeric id>` instead.",
                        "EMERGENCY CALL QUEUED ID: 9000000000000001",
                        pattern=f"^(EMERGENCY CALL QUEUED ID: {_TICKET}(,{_TICKET})*|"
                                "EMERGENCY CALL ADDED ID: .*)$"),
                        "headers": answer_headers},
                    "400": {**_text_answer(
                        "Refused; nothing was queued. The seed's own texts for type, "
                        "community id and key; otherwise one of: " + "; ".join(v1_errors)
                        + ". With Prefer: wait, also the CAD's own refusal of the queued "
                        "call (a dead letter now), with Preference-Applied.",
                        "INVALID API KEY",
                        pattern="^(INVALID REQUEST BODY: .*|INVALID REQUEST TYPE|INVALID "
                                "COMMUNITY ID|INVALID API KEY|INVALID CALL: .*|INVALID "
                                "REQUEST: .*|API .*)$"),
                        "headers": {"Preference-Applied": answer_headers[
                            "Preference-Applied"]}},
                    "413": _text_answer(f"The body is larger than {max_body_bytes} bytes."
                                        + beyond,
                                        f"REQUEST TOO LARGE: at most {max_body_bytes} bytes"),
                    "415": _text_answer("A Content-Encoding was given; send plain JSON.",
                                        "UNSUPPORTED CONTENT ENCODING gzip: send the body "
                                        "uncompressed"),
                    "429": {**_text_answer(too_many, "TOO MANY REQUESTS: at most 2 per "
                                           "second from one address (DISPATCHER_INGEST_RATE); "
                                           "retry in 1 s", pattern="^TOO MANY REQUESTS: "),
                            "headers": retry_after},
                    "503": {**_text_answer(
                        "The queue (Redis) is unreachable (QUEUE UNAVAILABLE), the backlog "
                        "cap DISPATCHER_MAX_BACKLOG is reached (QUEUE FULL: Redis answered, "
                        "the call was not taken), or the dispatcher is not configured (then "
                        "without Retry-After). Calls named in the text were queued before "
                        "the failure; the others were not.",
                        "QUEUE UNAVAILABLE: the queue (Redis) could not be reached within "
                        "3s: Connection refused. Retry in 5 s. No call of this request was "
                        "queued.",
                        pattern="^(QUEUE UNAVAILABLE|QUEUE FULL|DISPATCHER NOT CONFIGURED)"),
                        "headers": retry_after},
                },
            }},
            "/v2/emergency/servers/{serverId}/calls/911": {"post": {
                "operationId": "call911V2",
                "summary": "Queue one 911 call (v2 shape)",
                "description": "Bearer auth with SONORAN_API_KEY; errors are RFC 9457 "
                               "problem details. " + body_rules,
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "serverId", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1,
                                "maxLength": limits.MAX_SERVER_ID,
                                "pattern": "^[^\\u0000-\\u001F/]+$"},
                     "description": "The CAD server id the call is for."},
                    idem_header,
                    prefer_header,
                ],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/CallV2"},
                    "example": {"isEmergency": True, "caller": "Jane Doe",
                                "location": "Route 68 / Joshua Rd",
                                "description": "Two-car collision",
                                "metaData": {"postal": "350", "plate": "8ABC123"}}}}},
                "responses": {
                    "200": {"description": "Queued. With Prefer: wait, when the call was "
                                           "delivered in time: the CAD's own JSON (`callId` "
                                           "the CAD's numeric id) instead.",
                            "headers": answer_headers,
                            "content": {"application/json": {"schema": {"anyOf": [
                                {"$ref": "#/components/schemas/QueuedV2"},
                                {"$ref": "#/components/schemas/AddedV2"}]}}}},
                    "400": _problem("The body is invalid (`field` names the field when one "
                                    "is wrong), or the path's serverId or the Idempotency-Key "
                                    "header contains the API key. Nothing was queued. With "
                                    "Prefer: wait, also the CAD's own refusal of the queued "
                                    "call (then with Preference-Applied).", 400),
                    "401": {**_problem("Missing or wrong bearer key. With Prefer: wait, also "
                                       "the CAD's own 401 for the queued call (then with "
                                       "Preference-Applied).", 401),
                            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
                    "413": _with_text(_problem(f"The body is larger than {max_body_bytes} "
                                               "bytes." + beyond, 413)),
                    "415": _problem("A Content-Encoding was given; send plain JSON.", 415),
                    "429": _problem(too_many, 429, **retry_after),
                    "503": _problem("The queue (Redis) is unreachable or full (detail starts "
                                    "with `queue full:`; both with Retry-After), or the "
                                    "dispatcher is not configured.", 503, **retry_after),
                },
            }},
            "/emergency/remove_911": {"post": {
                "operationId": "remove911V1",
                "summary": "Take calls back (v1, the CAD's REMOVE_911 request)",
                "description": "`type` (REMOVE_911), `id` and `key` are checked like the "
                               "create door's. `callId` is our id, its ticket or the CAD's "
                               "id of a call we delivered; every id is looked up first, so "
                               "an unknown one takes nothing back. Not yet sent: cancelled, "
                               "never sent. "
                               "Being sent: taken back once the outcome is known. "
                               "Delivered: removed from the CAD by a worker (retried like "
                               "a call).",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"type": "object", "required": ["id", "key", "type", "data"],
                               "properties": {
                                   "id": {"type": "string"},
                                   "key": {"type": "string", "writeOnly": True},
                                   "type": {"const": "REMOVE_911"},
                                   "data": {"type": "array", "minItems": 1,
                                            "maxItems": max_calls, "items": {
                                                "type": "object", "required": ["callId"],
                                                "properties": {
                                                    "serverId": {"type": ["integer",
                                                                          "string"]},
                                                    "callId": {"type": ["integer",
                                                                        "string"]}}}}}},
                    "example": {"id": "my-community", "key": "<api key>",
                                "type": "REMOVE_911",
                                "data": [{"serverId": 1, "callId": 12345}]}}}},
                "responses": {
                    "200": {**_text_answer(
                        "Taken back; the ids as given. X-Dispatcher-Status says what "
                        "happened to each, in order: cancelled, pending (being sent), "
                        "removing, removed.",
                        "EMERGENCY CALL REMOVAL QUEUED ID: 12345",
                        pattern="^EMERGENCY CALL REMOVAL QUEUED ID: "),
                        "headers": {"X-Dispatcher-Status": {"schema": {"type": "string"}}}},
                    "400": _text_answer("Refused: the seed's texts for type, community id "
                                        "and key, or a body or callId that is not valid.",
                                        "INVALID API KEY"),
                    "404": _text_answer("No call of ours has one of the ids; nothing was "
                                        "taken back.", "CALL NOT FOUND: no call has the id "
                                        "'12345' (our id, or the CAD's id of a call we "
                                        "delivered)"),
                    "503": {**_text_answer("The queue (Redis) is unreachable, or the "
                                           "dispatcher is not configured.",
                                           "QUEUE UNAVAILABLE: ..."),
                            "headers": retry_after},
                },
            }},
            "/v2/emergency/servers/{serverId}/calls/911/{callId}": {"delete": {
                "operationId": "remove911V2",
                "summary": "Take one call back (v2 shape)",
                "description": "Bearer auth; `callId` is our id, its ticket or the CAD's "
                               "id of a call we delivered. What taking back means: see "
                               "remove911V1.",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "serverId", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "callId", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "Taken back: the CAD's answer shape plus ours.",
                            "content": {"application/json": {"schema": {
                                "type": "object",
                                "required": ["callId", "serverId", "id", "status"],
                                "properties": {
                                    "callId": {"type": ["integer", "string"]},
                                    "serverId": {"type": ["integer", "string"]},
                                    "id": {"type": "string", "pattern": f"^{_ID}$"},
                                    "status": {"enum": ["cancelled", "pending", "removing",
                                                        "removed"]}}}}}},
                    "400": _problem("The path holds the API key, or callId is not valid.",
                                    400),
                    "401": _problem("Missing or wrong bearer key.", 401),
                    "404": _problem("No call of ours has that id.", 404),
                    "503": _problem("The queue (Redis) is unreachable, or the dispatcher is "
                                    "not configured.", 503, **retry_after),
                },
            }},
            "/healthz": {"get": {
                "operationId": "health", "summary": "Health: 200 when Redis answers",
                "responses": {
                    "200": {"description": "Redis answers.", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["status", "redis"],
                                   "properties": {"status": {"const": "ok"},
                                                  "redis": {"const": True},
                                                  "circuit": {"enum": ["closed", "open",
                                                                       "half_open"]},
                                                  "queued": {"type": "integer"},
                                                  "oldest_age_s": {"type": ["number",
                                                                            "null"]},
                                                  "dead": {"type": "integer"}}}}}},
                    "503": {"description": "Redis does not answer.",
                            "content": {"application/json": {"schema": {
                                "type": "object", "required": ["status", "redis"],
                                "properties": {"status": {"const": "down"},
                                               "redis": {"const": False},
                                               "error": {"type": "string"}}}}}},
                }}},
            "/metrics": {"get": {
                "operationId": "metrics", "summary": "Prometheus metrics (text format)",
                "responses": {
                    "200": {"description": "Prometheus text exposition format 0.0.4.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "503": _text_answer("Redis does not answer.", "redis unavailable: "
                                        "ConnectionError"),
                }}},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1.",
                                      "content": {"application/json": {}}}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "SONORAN_API_KEY"}},
            "schemas": {
                "Call": _call_schema(),
                "CallV2": _v2_call_schema(),
                "CallRequestV1": {
                    "type": "object",
                    "required": ["id", "key", "type", "data"],
                    "properties": {
                        "id": {"type": "string", "description": "SONORAN_COMMUNITY_ID."},
                        "key": {"type": "string", "writeOnly": True,
                                "description": "SONORAN_API_KEY; never echoed or logged."},
                        "type": {"const": "CALL_911"},
                        "data": {"type": "array", "minItems": 1, "maxItems": max_calls,
                                 "items": {"$ref": "#/components/schemas/Call"}},
                    },
                    "description": "Other members are ignored.",
                },
                "QueuedV2": {
                    "type": "object",
                    "required": ["callId", "id", "status", "serverId", "isEmergency",
                                 "caller", "location", "description", "metaData"],
                    "properties": {
                        "callId": {"type": "integer", "minimum": 9000000000000001,
                                   "maximum": 9007199254740991,
                                   "description": "The call's ticket: a number like the "
                                                  "CAD's ids (above any of them) that "
                                                  "status and removal accept."},
                        "id": {"type": "string", "pattern": f"^{_ID}$",
                               "description": "Our id: `dispatcher status <id>`."},
                        "status": {"const": "queued"},
                        "serverId": {"type": "string"},
                        "isEmergency": {"type": "boolean"},
                        "caller": {"type": "string"},
                        "location": {"type": "string"},
                        "description": {"type": "string"},
                        "metaData": {"type": "object",
                                     "additionalProperties": {"type": "string"}},
                        "deleteAfterMinutes": {"type": "integer"},
                    },
                },
                "AddedV2": {
                    "type": "object",
                    "required": ["callId"],
                    "properties": {
                        "callId": {"type": "integer",
                                   "description": "The CAD's id of the call."},
                        "serverId": {"type": ["string", "integer"]},
                    },
                    "description": "The CAD's own answer (Prefer: wait): its JSON as it "
                                   "came, or, when that was not kept whole, `callId`, "
                                   "`serverId` and the call's fields.",
                },
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "instance", "traceId"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                        "traceId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                        "field": {"type": ["string", "null"],
                                  "description": "The field that is wrong, when one is."},
                    },
                },
            },
        },
    }
