"""The fake CAD API port: reading a request off the socket, its route, and creating calls.

Every request gets a route: "create" (v1 ``POST /emergency/call_911``, v2
``POST /v2/emergency/servers/{serverId}/calls/911``), "read" (v1 ``POST /emergency/get_calls``,
v2 ``GET /v2/emergency/servers/{serverId}/calls``), "remove" (v1 ``POST /emergency/remove_911``,
v2 ``DELETE /v2/emergency/servers/{serverId}/calls/911/{callId}``) or "other", which answers
404. This module answers the create route; ``readback`` answers read and remove.

Behaviours that are our assumption, because the public record (CAD-API.md) is silent:
- v1 with several calls in ``data`` answers ``EMERGENCY CALL ADDED ID: 10001,10002``.
- v1 compares ``id`` and ``key`` as exact strings and does not validate call fields
  beyond each being a JSON object.
- The v2 success body echoes the call plus ``callId``, ``serverId`` (the path segment,
  a string) and ``createdAt``; v2 validation errors name the offending field.
"""

import contextlib
import hmac
import json
import re
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

from dispatcher.simulator.answers import Outcome, answer_json, answer_problem, answer_text
from dispatcher.simulator.transport import POLL_S, BadRequest, QuietHandler, Server

if TYPE_CHECKING:
    from dispatcher.simulator.server import CadSimulator

V1_PATH = "/emergency/call_911"
ROUTES = ("create", "read", "remove", "other")
# (method, path) of each v1 route; v2 routes are matched by _V2_ROUTES.
_V1_ROUTES = {
    ("POST", V1_PATH): "create",
    ("POST", "/emergency/get_calls"): "read",
    ("POST", "/emergency/remove_911"): "remove",
}
_V2_SERVER = r"^/v2/emergency/servers/(?P<server>[^/]+)/calls"
_V2_ROUTES = (
    ("POST", re.compile(_V2_SERVER + r"/911$"), "create"),
    ("GET", re.compile(_V2_SERVER + r"$"), "read"),
    ("DELETE", re.compile(_V2_SERVER + r"/911/(?P<call>[^/]+)$"), "remove"),
)

# Creates calls in the fake CAD (calls, API version) and returns their ids and times.
Create = Callable[[list[dict[str, Any]], int], list[tuple[int, float]]]


@dataclass
class Request:
    """One request as read off the API socket."""

    method: str
    target: str
    raw: bytes
    body: Any
    headers: dict[str, str]
    version: int | None
    route: str  # one of ROUTES
    server_id: str | None  # v2: the path's serverId
    call_id: str | None  # v2 remove: the path's callId
    bearer: str | None
    arrived: float  # time.monotonic(), for the rate-limit window


class ApiHandler(QuietHandler):
    """Serves the fake CAD API on the API port."""

    def setup(self) -> None:
        """Prepare per-connection state."""
        super().setup()
        self._abort = False

    def finish(self) -> None:
        """Close normally, or with an RST when the request asked for a reset."""
        try:
            super().finish()
        finally:
            if self._abort:
                server = cast(Server, self.server)
                server.forget(self.connection)
                # Linger on with timeout 0 turns close() into an RST instead of a FIN.
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()

    def do_GET(self) -> None:
        """Serve any method the same way; only POST on the API paths succeeds."""
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _serve(self) -> None:
        """Read, record, decide and finish one request."""
        sim = cast(Server, self.server).sim
        try:
            raw = self._read_body()
        except BadRequest as exc:
            self.close_connection = True
            self._send(answer_text(exc.status, exc.text))
            return
        req = self._build_request(raw)
        plan = sim._arrive(req)
        outcome = sim._respond(req, plan)
        if outcome.action == "answer":
            # Recorded before writing, so a client that has its answer also sees the record.
            sim._settle(plan.entry, outcome.status)
            if self._send(outcome) is None:
                sim._settle(plan.entry, None)
        elif outcome.action == "rst":
            self._abort = True
            self.close_connection = True
        else:
            self._hang(outcome.hang_s, plan.epoch, sim)
            self.close_connection = True

    def _build_request(self, raw: bytes) -> Request:
        """Parse what routing, validation and the records need."""
        version, route, server_id, call_id = _route(self.command, urlsplit(self.path).path)
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            body = None
        bearer: str | None = None
        scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer":
            bearer = token.strip()
        return Request(
            method=self.command,
            target=self.path,
            raw=raw,
            body=body,
            headers=dict(self.headers.items()),
            version=version,
            route=route,
            server_id=server_id,
            call_id=call_id,
            bearer=bearer,
            arrived=time.monotonic(),
        )

    def _hang(self, max_s: float, epoch: int, sim: "CadSimulator") -> None:
        """Wait without answering until the client leaves, max_s passes or the fault ends."""
        deadline = time.monotonic() + max_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.connection, selectors.EVENT_READ)
            while not sim._hang_over(epoch):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                if not selector.select(timeout=min(POLL_S, left)):
                    continue
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    return
                if not peeked:
                    return  # the client disconnected
                # The client pipelined more bytes; keep hanging without spinning on them.
                time.sleep(POLL_S)


def _route(method: str, path: str) -> tuple[int | None, str, str | None, str | None]:
    """Return a request's API version, route, v2 serverId and v2 callId."""
    v1_route = _V1_ROUTES.get((method, path))
    if v1_route is not None:
        return 1, v1_route, None, None
    for route_method, pattern, route in _V2_ROUTES:
        match = pattern.match(path) if method == route_method else None
        if match:
            call = match.groupdict().get("call")
            return 2, route, unquote(match.group("server")), None if call is None else unquote(call)
    return None, "other", None, None


def _same_secret(given: Any, expected: str) -> bool:
    """Compare a presented credential with the configured one in constant time."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def _v2_invalid_field(body: Any) -> str | None:
    """Return why a v2 body is invalid, naming the field, or None when it is valid."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object"
    for name in ("caller", "location", "description"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            return f"The field '{name}' is required and must be a non-empty string"
    if not isinstance(body.get("isEmergency"), bool):
        return "The field 'isEmergency' is required and must be a boolean"
    if "metaData" in body:
        meta = body["metaData"]
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            return "The field 'metaData' must be an object whose values are all strings"
    return None


def v1_data(
    body: Any, request_type: str, community_id: str, api_key: str
) -> list[dict[str, Any]] | Outcome:
    """Check a v1 body's type, id, key and data as every v1 endpoint does: data, or the 400."""
    if not isinstance(body, dict) or body.get("type") != request_type:
        return answer_text(400, "INVALID REQUEST TYPE")
    if not _same_secret(body.get("id"), community_id):
        return answer_text(400, "INVALID COMMUNITY ID")
    if not _same_secret(body.get("key"), api_key):
        return answer_text(400, "INVALID API KEY")
    data = body.get("data")
    if not isinstance(data, list) or not data or not all(isinstance(c, dict) for c in data):
        return answer_text(400, "INVALID REQUEST TYPE")
    return data


def v2_refusal(req: Request, api_key: str, server_ids: tuple[str, ...]) -> Outcome | None:
    """Return the 401 for a bad bearer key or the 404 for an unconfigured server, else None."""
    instance = urlsplit(req.target).path
    if not _same_secret(req.bearer, api_key):
        return answer_problem(401, "Invalid or missing API key", instance)
    if req.server_id not in server_ids:
        return answer_problem(404, f"Server {req.server_id} is not configured", instance)
    return None


def iso_z(at: float) -> str:
    """Render a Unix time as the ISO 8601 UTC text v2 answers (milliseconds, Z)."""
    text = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def answer_v1(req: Request, community_id: str, api_key: str, create: Create) -> Outcome:
    """Handle the seed's v1 call_911 request."""
    data = v1_data(req.body, "CALL_911", community_id, api_key)
    if isinstance(data, Outcome):
        return data
    created = create(data, 1)
    # Only one id is documented; with several calls we answer every id, comma-separated
    # (our assumption), so a client that parses the first number still works.
    return answer_text(200, "EMERGENCY CALL ADDED ID: " + ",".join(str(i) for i, _ in created))


def answer_v2(req: Request, api_key: str, server_ids: tuple[str, ...], create: Create) -> Outcome:
    """Handle the v2 create-911-call request."""
    refusal = v2_refusal(req, api_key, server_ids)
    if refusal is not None:
        return refusal
    problem = _v2_invalid_field(req.body)
    if problem is not None:
        return answer_problem(400, problem, urlsplit(req.target).path)
    call = {**req.body, "serverId": req.server_id}
    [(cad_id, at)] = create([call], 2)
    return answer_json(
        200,
        {
            "callId": cad_id,
            "serverId": req.server_id,
            "isEmergency": call["isEmergency"],
            "caller": call["caller"],
            "location": call["location"],
            "description": call["description"],
            "metaData": call.get("metaData", {}),
            "createdAt": iso_z(at),
        },
    )
