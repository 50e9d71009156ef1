"""A fake Sonoran CAD API over real HTTP, with faults that can be switched while it runs.

It serves the v1 endpoint ``POST /emergency/call_911`` (the seed) and the v2 endpoint
``POST /v2/emergency/servers/{serverId}/calls/911``, records every request it received
(with the API key redacted) and every call it "created", and can misbehave on demand:
refuse connections, reset them, hang, answer slowly, answer 5xx/429/HTML/empty, reject
permanently, or create the call and then drop the connection. A second HTTP server on
its own port controls all of this, so it keeps working while the API port refuses.

Behaviours that are our assumption, because the public record (CAD-API.md) is silent:
- v1 with several calls in ``data`` answers ``EMERGENCY CALL ADDED ID: 10001,10002``.
- v1 compares ``id`` and ``key`` as exact strings and does not validate call fields
  beyond each being a JSON object.
- v1 429 and 5xx bodies are HTML pages from a proxy; v2 429 is the documented JSON.
- The v2 success body echoes the call plus ``callId``, ``serverId`` (the path segment,
  a string) and ``createdAt``; v2 validation errors name the offending field.
- The rate limit is off by default (the real v2 allows 10 creations a minute per key);
  when on it counts every request on the API port, per presented API key.
- Faults and the rate limit apply to every request on the API port, whatever its path,
  as a failing proxy in front of the CAD would.
- CAD ids start at 10001 and are never reused, not even after ``reset()``.

Records never hold the API key: the v1 ``key`` field, the Authorization header and any
occurrence of a configured or presented key are replaced by ``***`` before storing.
"""

import contextlib
import copy
import hashlib
import hmac
import json
import math
import re
import secrets
import selectors
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

__all__ = ["FAULT_KINDS", "FIRST_CALL_ID", "V1_PATH", "CadSimulator", "serve"]

V1_PATH = "/emergency/call_911"
_V2_PATH_RE = re.compile(r"^/v2/emergency/servers/(?P<server>[^/]+)/calls/911$")

# The first id the fake CAD hands out; real ids are numeric, their start is unknown.
FIRST_CALL_ID = 10001

FAULT_KINDS = frozenset(
    {
        "refuse",
        "reset",
        "error",
        "ratelimit",
        "hang",
        "slow",
        "reject",
        "commit_then_drop",
        "html200",
        "empty",
    }
)

# How often hanging handlers look for a cleared fault or shutdown.
_POLL_S = 0.05
# How often the accept loops look for shutdown; it bounds how long stop() and refuse take.
_SERVE_POLL_S = 0.02
# Larger than any real call batch; stops a runaway client from exhausting memory.
_MAX_BODY = 16 * 1024 * 1024
_REDACTED = "***"
# Redacts a v1 "key" field in raw text whatever its value's JSON type.
_KEY_FIELD_RE = re.compile(r'("key"\s*:\s*)("(?:[^"\\]|\\.)*"|[^\s,}\]]+)')
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_JSON = "application/json; charset=utf-8"
_PROBLEM = "application/problem+json"
# nginx's wording, which is what a proxy in front of the CAD would most likely show.
_NGINX_PHRASES = {503: "Service Temporarily Unavailable"}
_CAPTIVE_PORTAL = (
    "<!DOCTYPE html>\n<html><head><title>Network Login</title></head>"
    '<body><h1>Sign in to continue</h1><form method="post" action="/login">'
    '<input name="user"><input name="password" type="password"></form></body></html>\n'
)


@dataclass
class _Fault:
    """The active fault: what to do and for how many more requests."""

    kind: str
    remaining: int | None
    params: dict[str, Any]


@dataclass
class _Request:
    """One request as read off the API socket."""

    method: str
    target: str
    raw: bytes
    body: Any
    headers: dict[str, str]
    version: int | None
    server_id: str | None
    bearer: str | None
    arrived: float  # time.monotonic(), for the rate-limit window


@dataclass
class _Plan:
    """What was decided on arrival, under the lock, so arrival order decides."""

    entry: dict[str, Any]
    fault: _Fault | None
    epoch: int
    limited: tuple[str, int] | None  # (Retry-After value, seconds until the window frees)


@dataclass
class _Outcome:
    """How to finish a request: answer it, reset the connection, or hang."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    action: Literal["answer", "rst", "hang"] = "answer"
    hang_s: float = 0.0


class _BadRequest(Exception):
    """The HTTP framing itself was unusable."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _phrase(status: int) -> str:
    """Return the reason phrase for a status, or an empty string for unknown codes."""
    if status in _NGINX_PHRASES:
        return _NGINX_PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _text(status: int, text: str) -> _Outcome:
    """Build a plain-text answer, as v1 gives."""
    return _Outcome(status, text.encode(), _TEXT)


def _json(status: int, payload: Any, content_type: str = _JSON) -> _Outcome:
    """Build a JSON answer."""
    return _Outcome(status, json.dumps(payload).encode(), content_type)


def _proxy_page(status: int) -> bytes:
    """Return the HTML error page a reverse proxy shows for a status."""
    title = f"{status} {_phrase(status)}".strip()
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def _problem(status: int, detail: str, instance: str) -> _Outcome:
    """Build an RFC 7807 problem answer, as v2 gives for its errors."""
    payload = {
        "type": "about:blank",
        "title": _phrase(status),
        "status": status,
        "detail": detail,
        "instance": instance,
        "traceId": secrets.token_hex(16),
    }
    return _json(status, payload, _PROBLEM)


def _retry_after_value(value: Any) -> str:
    """Render Retry-After: numbers as whole seconds rounded up, strings (HTTP-dates) as is."""
    if isinstance(value, str):
        return value
    return str(max(0, math.ceil(float(value))))


def _same_secret(given: Any, expected: str) -> bool:
    """Compare a presented credential with the configured one in constant time."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def _redact_text(text: str, hidden: tuple[str, ...]) -> str:
    """Replace every v1 key field and every known secret in text by ***."""
    text = _KEY_FIELD_RE.sub(lambda m: m.group(1) + f'"{_REDACTED}"', text)
    for secret in hidden:
        # A secret may appear JSON-escaped in a body, so hide those spellings too.
        escaped = json.dumps(secret)[1:-1]
        for form in {secret, escaped, json.dumps(secret, ensure_ascii=False)[1:-1]}:
            if form:
                text = text.replace(form, _REDACTED)
    return text


def _redact_value(value: Any, hidden: tuple[str, ...]) -> Any:
    """Return a copy of parsed JSON with key fields and secrets replaced by ***."""
    if isinstance(value, dict):
        return {k: _REDACTED if k == "key" else _redact_value(v, hidden) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, hidden) for v in value]
    if isinstance(value, str):
        return _redact_text(value, hidden) if any(s in value for s in hidden) else value
    return value


def _check_fault_params(params: dict[str, Any]) -> None:
    """Reject fault parameters that would only fail later, inside a handler thread."""
    for name in ("status", "ms", "max_s"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{name} must be a number")
    status = params.get("status")
    if status is not None and not 100 <= status <= 599:
        raise ValueError("status must be between 100 and 599")
    retry_after = params.get("retry_after")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int | float | str)
    ):
        raise ValueError("retry_after must be a number of seconds, an HTTP-date or None")


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


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so stop() can cut them."""

    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 drops SYNs under a burst of concurrent clients.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], sim: "CadSimulator"
    ) -> None:
        self.sim = sim
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's getfqdn(), which can stall on a slow resolver."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection, then serve it in its own thread."""
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        self.forget(request)
        super().shutdown_request(request)

    def forget(self, conn: socket.socket) -> None:
        """Stop tracking a connection that its handler is about to close."""
        with self._conns_lock:
            self._conns.discard(conn)

    def close_connections(self) -> None:
        """Cut every open connection so idle keep-alives and hangs end at once."""
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._conns.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that went away; still report real bugs."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler that never logs per request."""

    protocol_version = "HTTP/1.1"
    server_version = "SonoranCADSimulator/1.0"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK
    # would add about 40 ms to every keep-alive answer.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        """Name the simulator in the Server header without the Python version."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: tests and the demo want a quiet simulator."""

    def _read_body(self) -> bytes:
        """Read the request body, honouring Content-Length or chunked encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise _BadRequest(400, "BAD REQUEST") from None
        if length < 0:
            raise _BadRequest(400, "BAD REQUEST")
        if length > _MAX_BODY:
            raise _BadRequest(413, "PAYLOAD TOO LARGE")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        """Read a chunked body and its trailers."""
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "BAD REQUEST") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > _MAX_BODY:
                raise _BadRequest(413, "PAYLOAD TOO LARGE")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _send(self, outcome: _Outcome) -> int | None:
        """Write an answer; return its status, or None when the client was gone."""
        try:
            self.send_response(outcome.status)
            if outcome.content_type:
                self.send_header("Content-Type", outcome.content_type)
            for name, value in outcome.headers.items():
                self.send_header(name, value)
            # Always framed by length, so keep-alive clients know where the answer ends.
            self.send_header("Content-Length", str(len(outcome.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(outcome.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return None
        return outcome.status


class _ApiHandler(_QuietHandler):
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
                server = cast(_Server, self.server)
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
        sim = cast(_Server, self.server).sim
        try:
            raw = self._read_body()
        except _BadRequest as exc:
            self.close_connection = True
            self._send(_text(exc.status, exc.text))
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

    def _build_request(self, raw: bytes) -> _Request:
        """Parse what routing, validation and the records need."""
        path = urlsplit(self.path).path
        version: int | None = None
        server_id: str | None = None
        if self.command == "POST":
            match = _V2_PATH_RE.match(path)
            if path == V1_PATH:
                version = 1
            elif match:
                version, server_id = 2, unquote(match.group("server"))
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            body = None
        bearer: str | None = None
        scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer":
            bearer = token.strip()
        return _Request(
            method=self.command,
            target=self.path,
            raw=raw,
            body=body,
            headers=dict(self.headers.items()),
            version=version,
            server_id=server_id,
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
                if not selector.select(timeout=min(_POLL_S, left)):
                    continue
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    return
                if not peeked:
                    return  # the client disconnected
                # The client pipelined more bytes; keep hanging without spinning on them.
                time.sleep(_POLL_S)


class _ControlHandler(_QuietHandler):
    """JSON control API on the control port."""

    def do_GET(self) -> None:
        """Serve the read-only endpoints."""
        sim = cast(_Server, self.server).sim
        readers = {"/received": sim.received, "/calls": sim.calls, "/stats": sim.stats}
        reader = readers.get(urlsplit(self.path).path)
        if reader is None:
            self._send(_json(404, {"error": "not found"}))
            return
        self._send(_json(200, reader()))

    def do_POST(self) -> None:
        """Serve the endpoints that change the simulator."""
        sim = cast(_Server, self.server).sim
        try:
            raw = self._read_body()
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            result = self._apply(sim, urlsplit(self.path).path, body)
        except _BadRequest as exc:
            self.close_connection = True
            self._send(_json(exc.status, {"error": exc.text}))
            return
        except LookupError:
            self._send(_json(404, {"error": "not found"}))
            return
        except (ValueError, TypeError) as exc:
            self._send(_json(400, {"error": str(exc)}))
            return
        except OSError as exc:
            self._send(_json(500, {"error": f"could not rebind the API port: {exc}"}))
            return
        self._send(_json(200, {"ok": True, **result}))

    @staticmethod
    def _apply(sim: "CadSimulator", path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Perform one control action; raise LookupError for an unknown path."""
        if path == "/fault":
            params = dict(body)
            kind = params.pop("kind", None)
            if not isinstance(kind, str):
                raise ValueError("'kind' is required")
            count = params.pop("count", None)
            sim.set_fault(kind, count=count, **params)
            return {"fault": kind}
        if path == "/clear":
            sim.clear_faults()
        elif path == "/reset":
            sim.reset()
        elif path == "/latency":
            sim.set_latency(float(body.get("ms", 0.0)))
        elif path == "/rate-limit":
            sim.set_rate_limit(
                body.get("max_requests"),
                float(body.get("window_s", 1.0)),
                body.get("retry_after"),
            )
        elif path == "/credentials":
            sim.set_credentials(body.get("community_id"), body.get("api_key"))
        else:
            raise LookupError(path)
        return {}


class CadSimulator:
    """A fake Sonoran CAD API with switchable faults and a record of what it received."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        community_id: str = "demo-community",
        api_key: str = "demo-key",
        server_ids: tuple[str, ...] = ("1",),
        control_port: int = 0,
        latency_ms: float = 0.0,
    ) -> None:
        self._host = host
        self._port = port
        self._control_port = control_port
        self._community_id = community_id
        self._api_key = api_key
        self._server_ids = tuple(str(s) for s in server_ids)
        self._initial_latency_s = latency_ms / 1000.0
        self._latency_s = self._initial_latency_s
        self._lock = threading.Lock()  # guards records, faults, limits and credentials
        self._admin = threading.RLock()  # serialises start/stop and listener rebinding
        self._stopping = threading.Event()
        self._fault: _Fault | None = None
        # Bumped when a fault is set or cleared explicitly; a hang ends when it changes.
        self._fault_epoch = 0
        self._rate: tuple[int, float, int | None] | None = None
        self._windows: dict[str, list[float]] = {}
        self._received: list[dict[str, Any]] = []
        self._calls: list[dict[str, Any]] = []
        self._seq = 0
        self._next_call_id = FIRST_CALL_ID
        self._api: tuple[_Server, threading.Thread] | None = None
        self._control: tuple[_Server, threading.Thread] | None = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> "CadSimulator":
        """Start serving in background daemon threads."""
        with self._admin:
            if self._started:
                return self
            self._stopping.clear()
            self._open_api()
            try:
                self._control = self._spawn(
                    _Server((self._host, self._control_port), _ControlHandler, self), "control"
                )
            except OSError:
                self._close_api()
                raise
            self._control_port = self._control[0].server_port
            self._started = True
            self._sync_listener()
        return self

    def stop(self) -> None:
        """Stop both servers and cut every connection, hanging ones included."""
        with self._admin:
            if not self._started:
                return
            self._stopping.set()
            with self._lock:
                self._fault_epoch += 1
            # Both accept loops wind down at once rather than one poll interval after another.
            servers = [s for s in (self._api, self._control) if s is not None]
            for server, _ in servers:
                threading.Thread(target=server.shutdown, daemon=True).start()
            for server, thread in servers:
                self._shut(server, thread)
            self._api = self._control = None
            self._started = False

    def __enter__(self) -> "CadSimulator":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the fake CAD API."""
        return f"http://{self._url_host()}:{self._port}"

    @property
    def control_url(self) -> str:
        """Base URL of the control server."""
        return f"http://{self._url_host()}:{self._control_port}"

    @property
    def port(self) -> int:
        """Port of the API server (the bound one once started)."""
        return self._port

    @property
    def control_port(self) -> int:
        """Port of the control server (the bound one once started)."""
        return self._control_port

    # -- configuration -----------------------------------------------------------------

    def set_fault(self, kind: str, *, count: int | None = None, **params: Any) -> None:
        """Misbehave on the next count API requests (None: until cleared), replacing any fault."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if count is not None:
            if kind == "refuse":
                raise ValueError("'refuse' lasts until cleared; it takes no count")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError("count must be a positive integer or None")
        _check_fault_params(params)
        with self._admin:
            with self._lock:
                self._fault = _Fault(kind, count, dict(params))
                self._fault_epoch += 1
            self._sync_listener()

    def clear_faults(self) -> None:
        """Behave normally again; re-bind the API port if it was refusing."""
        with self._admin:
            with self._lock:
                self._fault = None
                self._fault_epoch += 1
            self._sync_listener()

    def set_credentials(self, community_id: str | None = None, api_key: str | None = None) -> None:
        """Change the community id and/or API key the fake CAD accepts."""
        for name, value in (("community_id", community_id), ("api_key", api_key)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string")
        with self._lock:
            if community_id is not None:
                self._community_id = community_id
            if api_key is not None:
                self._api_key = api_key

    def set_latency(self, ms: float) -> None:
        """Delay every API answer by ms milliseconds."""
        if ms < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            self._latency_s = ms / 1000.0

    def set_rate_limit(
        self, max_requests: int | None, window_s: float = 1.0, retry_after: int | None = None
    ) -> None:
        """Answer 429 once max_requests arrived within window_s seconds; None disables."""
        if max_requests is not None and (max_requests < 0 or window_s <= 0):
            raise ValueError("max_requests must be >= 0 and window_s > 0")
        with self._lock:
            self._rate = None if max_requests is None else (max_requests, window_s, retry_after)
            self._windows.clear()

    def reset(self) -> None:
        """Forget records, faults, rate limit and latency changes; keep credentials."""
        with self._admin:
            with self._lock:
                self._received.clear()
                self._calls.clear()
                self._fault = None
                self._fault_epoch += 1
                self._rate = None
                self._windows.clear()
                self._latency_s = self._initial_latency_s
            self._sync_listener()

    # -- records -----------------------------------------------------------------------

    def received(self) -> list[dict[str, Any]]:
        """Return a copy of every request that reached a handler, in arrival order."""
        with self._lock:
            return copy.deepcopy(self._received)

    def calls(self) -> list[dict[str, Any]]:
        """Return a copy of every call the fake CAD created, in order."""
        with self._lock:
            return copy.deepcopy(self._calls)

    def stats(self) -> dict[str, Any]:
        """Summarise the records: counts, answers by status and duplicate calls."""
        with self._lock:
            by_status: dict[str, int] = {}
            unanswered = 0
            for entry in self._received:
                if entry["status"] is None:
                    unanswered += 1
                else:
                    key = str(entry["status"])
                    by_status[key] = by_status.get(key, 0) + 1
            seen: set[str] = set()
            duplicates = 0
            for record in self._calls:
                dump = json.dumps(record["call"], sort_keys=True)
                if dump in seen:
                    duplicates += 1
                seen.add(dump)
            return {
                "received": len(self._received),
                "created": len(self._calls),
                "by_status": by_status,
                "duplicates": duplicates,
                "unanswered": unanswered,
            }

    # -- internals: listeners ----------------------------------------------------------

    def _url_host(self) -> str:
        """Return a host a client can connect to, even when bound to every interface."""
        if self._host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self._host == "::":
            return "[::1]"
        return f"[{self._host}]" if ":" in self._host else self._host

    def _spawn(self, server: _Server, name: str) -> tuple[_Server, threading.Thread]:
        """Run a server's loop in a daemon thread."""
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _SERVE_POLL_S},
            name=f"cad-simulator-{name}",
            daemon=True,
        )
        thread.start()
        return server, thread

    @staticmethod
    def _shut(server: _Server, thread: threading.Thread) -> None:
        """Stop a server's loop, close its socket and cut its connections."""
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join(timeout=1.0)

    def _open_api(self) -> None:
        """Bind the API port; a re-bind retries briefly while the old socket lets go."""
        attempts = 1 if self._port == 0 else 40
        for attempt in range(attempts):
            try:
                server = _Server((self._host, self._port), _ApiHandler, self)
                break
            except OSError:
                if attempt == attempts - 1:
                    raise
                time.sleep(_POLL_S)
        self._port = server.server_port
        self._api = self._spawn(server, "api")

    def _close_api(self) -> None:
        """Close the API port so clients get connection refused."""
        if self._api is not None:
            self._shut(*self._api)
            self._api = None

    def _sync_listener(self) -> None:
        """Make the API port listen exactly when no refuse fault is active."""
        if not self._started:
            return
        with self._lock:
            refusing = self._fault is not None and self._fault.kind == "refuse"
        if refusing:
            self._close_api()
        elif self._api is None:
            self._open_api()

    # -- internals: handling -----------------------------------------------------------

    def _arrive(self, req: _Request) -> _Plan:
        """Record a request and take its fault and rate-limit decision in arrival order."""
        with self._lock:
            hidden = tuple({self._api_key, req.bearer or ""} - {""})
        if isinstance(req.body, dict) and isinstance(req.body.get("key"), str) and req.body["key"]:
            hidden += (req.body["key"],)
        headers = {
            name: _REDACTED
            if name.lower() in ("authorization", "proxy-authorization")
            else _redact_text(value, hidden)
            for name, value in req.headers.items()
        }
        entry: dict[str, Any] = {
            "seq": 0,
            "at": time.time(),
            "method": req.method,
            "path": req.target,
            "version": req.version,
            "body": _redact_value(req.body, hidden),
            "raw": _redact_text(req.raw.decode("utf-8", errors="replace"), hidden),
            "headers": headers,
            "status": None,
            "fault": None,
        }
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._received.append(entry)
            fault = self._take_fault()
            entry["fault"] = fault.kind if fault else None
            limited = None
            if fault is None or fault.kind in ("slow", "commit_then_drop"):
                limited = self._check_rate(req)
            return _Plan(entry, fault, self._fault_epoch, limited)

    def _take_fault(self) -> _Fault | None:
        """Consume one use of the active fault (caller holds the lock)."""
        fault = self._fault
        if fault is None or fault.kind == "refuse":
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        return _Fault(fault.kind, None, dict(fault.params))

    def _check_rate(self, req: _Request) -> tuple[str, int] | None:
        """Admit a request into its key's sliding window or say how long to wait."""
        if self._rate is None:
            return None
        max_requests, window_s, retry_after = self._rate
        presented: Any = req.bearer if req.version == 2 else None
        if req.version != 2 and isinstance(req.body, dict):
            presented = req.body.get("key")
        if not isinstance(presented, str):
            presented = ""
        # Keyed by a digest so the window table never holds a key in clear.
        bucket_id = hashlib.sha256(presented.encode()).hexdigest()
        bucket = [t for t in self._windows.get(bucket_id, []) if t > req.arrived - window_s]
        self._windows[bucket_id] = bucket
        if len(bucket) < max_requests:
            bucket.append(req.arrived)
            return None
        oldest = min(bucket) if bucket else req.arrived
        frees_in = max(1, math.ceil(oldest + window_s - req.arrived))
        shown = _retry_after_value(retry_after) if retry_after is not None else str(frees_in)
        return shown, frees_in

    def _respond(self, req: _Request, plan: _Plan) -> _Outcome:
        """Decide the answer: latency first, then the fault, the rate limit, the API."""
        with self._lock:
            latency_s = self._latency_s
        self._pause(latency_s)
        fault = plan.fault
        if fault is not None and fault.kind not in ("slow", "commit_then_drop"):
            return self._faulty(req, fault)
        if fault is not None and fault.kind == "slow":
            self._pause(float(fault.params.get("ms", 0.0)) / 1000.0)
        if plan.limited is not None:
            outcome = self._too_many(req, *plan.limited)
        elif req.version == 1:
            outcome = self._v1(req)
        elif req.version == 2:
            outcome = self._v2(req)
        else:
            outcome = _text(404, "NOT FOUND")
        if fault is not None and fault.kind == "commit_then_drop":
            outcome.action = "rst"
        return outcome

    def _faulty(self, req: _Request, fault: _Fault) -> _Outcome:
        """Build the answer (or non-answer) of a fault that replaces normal handling."""
        params = fault.params
        if fault.kind == "reset":
            return _Outcome(action="rst")
        if fault.kind == "hang":
            return _Outcome(action="hang", hang_s=float(params.get("max_s", 3600)))
        if fault.kind == "error":
            status = int(params.get("status", 503))
            body = params.get("body")
            page = _proxy_page(status) if body is None else str(body).encode()
            return _Outcome(status, page, str(params.get("content_type", _HTML)))
        if fault.kind == "ratelimit":
            retry_after = params.get("retry_after")
            shown = None if retry_after is None else _retry_after_value(retry_after)
            return self._too_many(req, shown, None)
        if fault.kind == "reject":
            if req.version == 2:
                status = int(params.get("status", 404))
                detail = str(params.get("detail", "API is not enabled for this community"))
                return _problem(status, detail, urlsplit(req.target).path)
            return _text(400, str(params.get("text", "API IS NOT ENABLED FOR THIS COMMUNITY")))
        if fault.kind == "html200":
            return _Outcome(200, str(params.get("body", _CAPTIVE_PORTAL)).encode(), _HTML)
        # The only kind left is "empty".
        return _Outcome(int(params.get("status", 502)))

    def _too_many(self, req: _Request, retry_after: str | None, frees_in: int | None) -> _Outcome:
        """Build a 429: the documented JSON for v2, a proxy's HTML page for v1."""
        if req.version == 2:
            outcome = _json(429, {"message": "API rate limit exceeded", "status": 429})
            reset = frees_in if frees_in is not None else retry_after
            if reset is not None:
                outcome.headers["RateLimit-Reset"] = str(reset)
        else:
            outcome = _Outcome(429, _proxy_page(429), _HTML)
        if retry_after is not None:
            outcome.headers["Retry-After"] = retry_after
        return outcome

    def _v1(self, req: _Request) -> _Outcome:
        """Handle the seed's v1 call_911 request."""
        body = req.body
        if not isinstance(body, dict) or body.get("type") != "CALL_911":
            return _text(400, "INVALID REQUEST TYPE")
        with self._lock:
            community_id, api_key = self._community_id, self._api_key
        if not _same_secret(body.get("id"), community_id):
            return _text(400, "INVALID COMMUNITY ID")
        if not _same_secret(body.get("key"), api_key):
            return _text(400, "INVALID API KEY")
        data = body.get("data")
        if not isinstance(data, list) or not data or not all(isinstance(c, dict) for c in data):
            return _text(400, "INVALID REQUEST TYPE")
        created = self._create(data, version=1)
        # Only one id is documented; with several calls we answer every id, comma-separated
        # (our assumption), so a client that parses the first number still works.
        return _text(200, "EMERGENCY CALL ADDED ID: " + ",".join(str(i) for i, _ in created))

    def _v2(self, req: _Request) -> _Outcome:
        """Handle the v2 create-911-call request."""
        instance = urlsplit(req.target).path
        with self._lock:
            api_key = self._api_key
        if not _same_secret(req.bearer, api_key):
            return _problem(401, "Invalid or missing API key", instance)
        if req.server_id not in self._server_ids:
            return _problem(404, f"Server {req.server_id} is not configured", instance)
        problem = _v2_invalid_field(req.body)
        if problem is not None:
            return _problem(400, problem, instance)
        call = {**req.body, "serverId": req.server_id}
        [(cad_id, at)] = self._create([call], version=2)
        created_at = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds")
        return _json(
            200,
            {
                "callId": cad_id,
                "serverId": req.server_id,
                "isEmergency": call["isEmergency"],
                "caller": call["caller"],
                "location": call["location"],
                "description": call["description"],
                "metaData": call.get("metaData", {}),
                "createdAt": created_at.replace("+00:00", "Z"),
            },
        )

    def _create(self, calls: list[dict[str, Any]], version: int) -> list[tuple[int, float]]:
        """Create calls in the fake CAD; return their ids and creation times."""
        created: list[tuple[int, float]] = []
        with self._lock:
            for call in calls:
                cad_id, at = self._next_call_id, time.time()
                self._next_call_id += 1
                self._calls.append(
                    {"cad_id": cad_id, "call": copy.deepcopy(call), "version": version, "at": at}
                )
                created.append((cad_id, at))
        return created

    def _settle(self, entry: dict[str, Any], status: int | None) -> None:
        """Record the status actually sent (None when nothing was)."""
        with self._lock:
            entry["status"] = status

    def _pause(self, seconds: float) -> None:
        """Sleep in the handler thread, cut short by stop()."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _hang_over(self, epoch: int) -> bool:
        """Tell a hanging handler whether the fault was cleared or the simulator stopped."""
        with self._lock:
            return self._stopping.is_set() or self._fault_epoch != epoch


def serve(
    host: str, port: int, community_id: str, api_key: str, control_port: int | None = None
) -> None:
    """Run a simulator in the foreground until SIGINT or SIGTERM."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    # Signal handlers can only be installed from the main thread.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    sim = CadSimulator(
        host, port, community_id=community_id, api_key=api_key, control_port=control_port or 0
    )
    try:
        sim.start()
        print(
            f"Sonoran CAD simulator: API {sim.url} (community {community_id}), "
            f"control {sim.control_url}; Ctrl+C to stop",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
