"""The two ingest doors: a call's way in over HTTP (the seed's own request, and v2).

Both answer only after every call is recorded in Redis. `dispatcher.http.app` mounts
them (and the operations page) on one Flask app; the state they share is a `Door` on
``app.extensions`` (this module: the credentials of every community, checks, answers);
the two routes themselves are `dispatcher.http.create`.

``POST /emergency/call_911`` (v1, the seed) takes the seed's request body byte for byte
(``{"id", "key", "type": "CALL_911", "data": [call, ...]}``). ``type``, ``id`` and ``key``
are checked in that order against our configuration and refused with the seed's own
400 texts (``INVALID REQUEST TYPE``, ``INVALID COMMUNITY ID``, ``INVALID API KEY``).
Then every call in ``data`` is validated (`Call.parse`: the seed's call object or the
flat form; ``metaData.postal`` may be a number and is kept as its text) and only when
all are valid are they queued, in order. The answer is 200
``EMERGENCY CALL QUEUED ID: <ticket>[,<ticket>...]``: each call's ticket
(`dispatcher.tickets`), a number above 9e15, so scripts that read ``ID: (%d+)`` get an
id the CAD's clients, our status and our removal accept. Every create answer names our
own ids (ULIDs) in ``X-Dispatcher-Call-Id``.

``POST /v2/emergency/servers/{serverId}/calls/911`` (v2) takes one call with
``Authorization: Bearer <key>``; ``metaData`` values are strings, as the v2 API wants.
Errors are ``application/problem+json`` (RFC 9457) with ``type``, ``title``,
``status``, ``detail``, ``instance`` and ``traceId`` (also ``field`` when one field is
wrong); success is 200 JSON with ``callId`` (the call's ticket, a JSON integer like the
CAD's ids), ``id`` (our id) and ``status: "queued"``.

``Prefer: wait=N`` (RFC 7240, `dispatcher.http.prefer`; N above 30 is taken as 30) on
either door holds the answer until every call of the request has an outcome, or N
seconds: then the CAD's own answer, with ``Preference-Applied: wait=N``, if all were
delivered (v1: the CAD's text, ``EMERGENCY CALL ADDED ID: <its id>``, also when the CAD
speaks v2; v2: its JSON) or the request's one call was refused for good (its 400/401);
otherwise the queued answer. How the wait works: `dispatcher.http.waiting`.

Decisions (also in the OpenAPI description served at ``/openapi.json``):

- Content-Type is not checked (the official resource sends ``application/json``;
  others send none or ``text/plain``); the body must be UTF-8 JSON (a BOM is allowed),
  one object, no duplicate names at any level, no ``NaN``/``Infinity``, integers within
  +-(2**53-1) and finite floats (I-JSON, RFC 7493), nesting at most `MAX_JSON_DEPTH`.
  Compressed bodies (``Content-Encoding``) get 415. Anything else wrong with the body
  gets 400 ``INVALID REQUEST BODY: <why>``.
- Limits: `MAX_BODY_BYTES` per request (413), `MAX_CALLS_PER_REQUEST` calls (400), and
  the per-call limits of `dispatcher.call`. Unknown top-level members of a v1 body are
  ignored (the CAD ignores them too); unknown members of a call are kept and sent to the
  CAD as they came (`dispatcher.callextra`: at most 50, names 1..64 characters).
  On v2, non-string metaData values are sent as their text (`doorrules.v2_body`).
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
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import Flask, Response, current_app, request

from dispatcher import clock as shared_clock
from dispatcher.call import Call
from dispatcher.communities import Communities, Community, Live
from dispatcher.communities import load as load_communities
from dispatcher.errors import InvalidCall, QueueFull, QueueUnavailable
from dispatcher.http import clientaddr, doorrules, prefer
from dispatcher.http.body import BadBody
from dispatcher.http.refusals import RefusalLog
from dispatcher.http.throttle import IngestRate, Verdict
from dispatcher.http.waiting import Answer, Outcome, Outcomes
from dispatcher.producer import PRODUCER_SOCKET_TIMEOUT_S, Producer
from dispatcher.redact import LineRedactor as _Redactor
from dispatcher.redact import holds_secret as _holds
from dispatcher.redisconn import connect
from dispatcher.settings import Settings

# A stable logger name operators filter on (kept from before the move into http/).
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

#: Redis connections one web process may open: more than its threads (16 and
#: `dispatcher.http.waiting.MAX_WAITING`) and the outcomes listener, so a burst of waiting
#: requests never finds the pool empty (redis-py's default is 100). Opened only when used.
REDIS_CONNECTIONS = 1024

#: Why a call that contains the API key is refused (the contract: nothing stores it).
KEY_IN_CALL = ("the call contains the API key; it would be stored and shown with the call, "
               "so it is refused: remove it")

#: The answer header naming our ids (comma-separated, in the order of the request).
CALL_ID_HEADER = "X-Dispatcher-Call-Id"

_TEXT = "text/plain"
_PROBLEM = "application/problem+json"
_JSON = "application/json"


# -- answers ------------------------------------------------------------------------------

def plain(body: str, status: int, **headers: str) -> Response:
    """A text/plain answer (the v1 door's and the seed's form)."""
    return Response(body, status=status, mimetype=_TEXT, headers=headers)


@dataclass(frozen=True)
class Reply:
    """An answer of the create routes, before it is a Flask `Response` (`to_response`)
    or written straight to WSGI by the lean path (`dispatcher.http.lean`)."""

    status: int
    body: str
    mimetype: str
    headers: dict[str, str] = field(default_factory=dict)


def to_response(reply: Reply) -> Response:
    """The Flask answer of a `Reply`."""
    return Response(reply.body, status=reply.status, mimetype=reply.mimetype,
                    headers=reply.headers)


def plain_reply(body: str, status: int, **headers: str) -> Reply:
    """A text/plain `Reply` (`plain`'s)."""
    return Reply(status, body, _TEXT, headers)


@dataclass(frozen=True)
class Asked:
    """What the create routes read off a request, whichever path serves it: Flask's
    (`flask_asked`) or the lean one's (`dispatcher.http.lean`). ``read`` gives the body
    (raising `doorrules.Unsupported` for a compressed one, 413 beyond the limit)."""

    environ: dict[str, Any]
    path: str
    addr: str
    read: Callable[[], bytes]

    def header(self, name: str) -> str | None:
        """A request header, as werkzeug's ``request.headers.get`` reads it off the
        WSGI environ (``Content-Type``/``Content-Length`` are not asked for)."""
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return None if value is None else str(value)


def flask_asked() -> Asked:
    """The `Asked` of the Flask request being served."""
    return Asked(request.environ, request.path, client_addr(),
                 lambda: doorrules.read_body(request))


def _idempotency_header(asked: Asked | None = None) -> str | None:
    """The request's ``Idempotency-Key`` header, checked; None when absent."""
    value = (asked or flask_asked()).header("Idempotency-Key")
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


# -- the state both doors share ------------------------------------------------------------

#: Where the `Door` lives in ``app.extensions``.
EXTENSION = "dispatcher.door"


@dataclass(frozen=True)
class Door:
    """What the doors need: the producer, the configured credentials, the refusal log."""

    settings: Settings
    producer: Producer
    key: str | None
    community: str | None
    safe: _Redactor
    refusals: RefusalLog
    rate: IngestRate | None
    #: The requests waiting for the CAD's answer (``Prefer: wait``) and their listener.
    outcomes: Outcomes
    #: Every community's keys (current and previous): none may appear in a call.
    keys: tuple[str, ...] = ()
    #: The community this door serves (None: a door made without one, in tests).
    member: Community | None = None
    #: Every community's door by name (DISPATCHER_COMMUNITIES; one without the file).
    doors: dict[str, Door] = field(default_factory=dict)
    #: The communities as they change (`dispatcher reload`, the file), the generation
    #: these doors were made for, and the producer and settings they were made from.
    live: Live | None = None
    generation: int = 0
    origin: Producer | None = None
    #: The communities the doors were made for (their lookups pick a request's door).
    communities: Communities | None = None

    @classmethod
    def for_settings(cls, settings: Settings, producer: Producer | None = None,
                     live: Live | None = None) -> Door:
        """The door of the default community (or the first), knowing every community's."""
        # Never a local spool (DISPATCHER_SPOOL_DIR): the door answers 503, clients retry.
        prod = producer or Producer(settings.with_(spool_dir=None), client=connect(
            settings, socket_timeout=PRODUCER_SOCKET_TIMEOUT_S,
            max_connections=REDIS_CONNECTIONS))
        if live is None and settings.communities_file:
            live = prod.live()  # the producers' own: one per process
        served = live.current() if live is not None else load_communities(settings)
        keys = tuple(prod.keys())
        safe = _Redactor(list(keys) or [""])
        rate = (IngestRate(prod.client, settings.ingest_rate, settings.prefix)
                if settings.ingest_rate else None)
        refusals = RefusalLog(log)
        doors: dict[str, Door] = {}
        for c in served:
            own = c.settings
            key = own.api_key.reveal() if own.api_key else None
            doors[c.name] = cls(own, prod.of(c.name), key, own.community_id, safe, refusals,
                                rate, Outcomes(prod.client, own.prefix), keys, c, doors, live,
                                live.generation if live is not None else 0, prod, served)
        return doors[served.default_name or served.names[0]]

    def fresh(self) -> bool:
        """Whether these doors are still the communities' current ones (`current` makes
        them anew otherwise)."""
        if self.live is None:
            return True
        self.live.current()
        return self.live.generation == self.generation

    def current(self) -> Door:
        """This door, or the doors made anew when the communities changed since (their
        listeners started; the old ones stopped once no request can still wait on them)."""
        if self.fresh():
            return self
        assert self.live is not None
        with _RELOAD_LOCK:
            found: Door = current_app.extensions[EXTENSION]
            if found.generation == self.live.generation:
                return found
            assert found.origin is not None
            fresh = Door.for_settings(found.origin.settings, found.origin, self.live)
            for d in fresh.doors.values():
                d.outcomes.start()
            current_app.extensions[EXTENSION] = fresh
            old = [d.outcomes for d in found.doors.values()]

            def stop_old() -> None:
                for outcomes in old:
                    outcomes.stop()

            timer = threading.Timer(prefer.MAX_WAIT_S + 5, stop_old)
            timer.daemon = True
            timer.start()
            return fresh

    def pick_v1(self, body: dict[str, Any], kind: str) -> Door | Response:
        """The door of the community a v1 body's ``id`` and ``key`` name, or the seed's
        refusal (``type``, then ``id``, then ``key``, as the CAD checks them)."""
        picked = self.picked_v1(flask_asked(), body, kind)
        return to_response(picked) if isinstance(picked, Reply) else picked

    def picked_v1(self, asked: Asked, body: dict[str, Any], kind: str) -> Door | Reply:
        """`pick_v1` of any request (its refusal a `Reply`)."""
        if body.get("type") != kind:
            return self.refusal(asked, "INVALID REQUEST TYPE")
        served = self.served()
        if not served.has_id(body.get("id")):
            return self.refusal(asked, "INVALID COMMUNITY ID")
        found = served.for_credentials(body.get("id"), body.get("key"), shared_clock.now())
        if found is None:
            return self.refusal(asked, "INVALID API KEY")
        return self.doors[found.name]

    def pick_bearer(self) -> Door | Response:
        """The door of the community whose key is the request's Bearer credential, or
        the v2 401."""
        picked = self.picked_bearer(flask_asked())
        return to_response(picked) if isinstance(picked, Reply) else picked

    def picked_bearer(self, asked: Asked) -> Door | Reply:
        """`pick_bearer` of any request (its 401 a `Reply`)."""
        scheme, _, token = (asked.header("Authorization") or "").strip().partition(" ")
        found = (self.served().for_key(token.strip(), shared_clock.now())
                 if scheme.lower() == "bearer" else None)
        if found is not None:
            return self.doors[found.name]
        return self.problem_reply(asked, 401, "Unauthorized", "Invalid or missing API key",
                                  **{"WWW-Authenticate": 'Bearer realm="sonoran-dispatcher"'})

    def served(self) -> Communities:
        """The communities these doors were made for."""
        assert self.communities is not None, "a Door is made by Door.for_settings"
        return self.communities

    def unconfigured(self) -> Response | None:
        """The v1 503 when this process has no community id or key to check against."""
        found = self.unconfigured_reply(flask_asked())
        return None if found is None else to_response(found)

    def unconfigured_reply(self, asked: Asked) -> Reply | None:
        """`unconfigured` of any request."""
        if self.community and self.key:
            return None
        return self.refusal(asked, "DISPATCHER NOT CONFIGURED: SONORAN_COMMUNITY_ID AND "
                            "SONORAN_API_KEY MUST BE SET", 503)

    def key_outside(self, server_id: str | None, header_key: str | None) -> str | None:
        """Why the request is refused when any community's key is in its path or header."""
        for key in self.keys or (self.key,):
            why = doorrules.key_outside_body(key, server_id, header_key)
            if why:
                return why
        return None

    def holds_key(self, obj: Any) -> bool:
        """Whether ``obj`` carries any community's key."""
        return any(_holds(obj, key) for key in self.keys or (self.key or "",) if key)

    def install(self, app: Flask) -> None:
        """Mount both doors on `app`, with this door as their state; start listening."""
        from dispatcher.http.create import call_911, call_911_v2  # they use this module

        app.extensions[EXTENSION] = self
        for d in self.doors.values() or (self,):
            d.outcomes.start()
        app.add_url_rule(V1_PATH, view_func=call_911, methods=["POST"])
        app.add_url_rule(V2_PATH, view_func=call_911_v2, methods=["POST"])

    def problem(self, status: int, title: str, detail: str, field: str | None = None,
                **headers: str) -> Response:
        """An RFC 9457 answer of the v2 door (its refusal logged)."""
        return to_response(self.problem_reply(flask_asked(), status, title, detail, field,
                                              **headers))

    def problem_reply(self, asked: Asked, status: int, title: str, detail: str,
                      field: str | None = None, **headers: str) -> Reply:
        """`problem` of any request."""
        safe = self.safe
        trace = uuid.uuid4().hex
        body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                                "detail": safe(detail), "instance": safe(asked.path),
                                "traceId": trace}
        if field is not None:
            body["field"] = safe(field, 100)
        self.refusals.refused(asked.addr, f"http v2: {status} {body['detail']} "
                              f"(trace {trace})",
                              logging.WARNING if status >= 500 else logging.INFO)
        return Reply(status, json.dumps(body, ensure_ascii=False), _PROBLEM, headers)

    def refuse(self, text: str, status: int = 400, **headers: str) -> Response:
        """A plain-text refusal of the v1 door (logged)."""
        return to_response(self.refusal(flask_asked(), text, status, **headers))

    def refusal(self, asked: Asked, text: str, status: int = 400, **headers: str) -> Reply:
        """`refuse` of any request."""
        text = self.safe(text, MAX_DETAIL_CHARS + 40)
        self.refusals.refused(asked.addr, f"http v1: {status} {text}", logging.INFO)
        return plain_reply(text, status, **headers)

    def too_fast(self, addr: str | None = None) -> Verdict | None:
        """The ingest rate's refusal of this source address (this request's), if any."""
        if self.rate is None:
            return None
        return self.rate.refusal(client_addr() if addr is None else addr)

    def enqueue_all(self, calls: list[Call], notify: bool = False) -> tuple[
            list[str], list[str], QueueUnavailable | QueueFull | InvalidCall | None]:
        """Queue calls in order; stop at the first failure. Returns the ids queued, their
        tickets (as text: the ticket, or our id for a call recorded before tickets) and
        the failure.

        ``notify``: the request waits for the outcomes (``Prefer: wait``).
        """
        ids: list[str] = []
        tickets: list[str] = []
        for call in calls:
            try:
                call_id, ticket = self.producer.enqueue_ticketed(call, "http", notify=notify)
            except (QueueUnavailable, QueueFull, InvalidCall) as exc:
                return ids, tickets, exc
            except redis.RedisError as exc:  # bounded() translates the usual ones
                return ids, tickets, QueueUnavailable(
                    f"the queue (Redis) failed: {type(exc).__name__}")
            ids.append(call_id)
            tickets.append(call_id if ticket is None else str(ticket))
        return ids, tickets, None

    def wait_for(self, seconds: int) -> bool:
        """Whether this request waits (it asked to, and the process can hold it now)."""
        return seconds > 0 and self.outcomes.room()

    def waited(self, ids: list[str], seconds: int,
               answer: Callable[[list[Outcome]], Answer | None]) -> Reply | None:
        """The CAD's answer after waiting up to ``seconds`` for the calls' outcomes; None
        (give the queued answer) when it did not come in time or cannot be told."""
        outcomes = self.outcomes.wait(ids, seconds)
        found = answer(outcomes) if outcomes is not None else None
        if found is None:
            return None
        return Reply(found.status, found.body, found.mimetype,
                     {CALL_ID_HEADER: ",".join(ids), "Preference-Applied": f"wait={seconds}"})


def door() -> Door:
    """The `Door` of the app serving this request (made anew after a reload)."""
    found: Door = current_app.extensions[EXTENSION]
    return found.current()


_RELOAD_LOCK = threading.Lock()


def client_addr() -> str:
    """This request's source address, as `dispatcher.http.clientaddr` believes it."""
    return clientaddr.client_address(request)
