"""One base URL for the whole CAD API: what our door does not handle goes to the CAD.

A client with one base URL for the CAD API (the CAD's own SDKs, every resource built on
them) points it at our door and keeps every endpoint. A request under the CAD's API
paths that no route of ours knows (`dispatcher.http.handlers.not_found` asks this module
first) is passed to the configured CAD (``SONORAN_API_URL``) and its answer passed back:

- the shapes: v1 ``POST /{category}/{endpoint}`` with a category of `V1_CATEGORIES`
  (``/emergency/get_calls``, ``/general/get_version``...) and any ``GET``, ``POST``,
  ``PUT``, ``PATCH`` or ``DELETE`` under ``/v2/``. Our own routes win (a path one of them
  knows is never forwarded, whatever the method: it gets our 405); everything else, our
  page and ``/api/...`` included, gets our 404.
- the request as it came: method, path, query, body and the client's own credentials
  (the body's id/key on v1, ``Authorization`` on v2), to the configured base URL only: the
  path is rebuilt from checked segments (no ``.``/``..``, no empty segment, no backslash
  or control character: 400), so neither ``//host`` nor an absolute URL can lead
  elsewhere. Hop-by-hop headers, ``Host``, ``Cookie`` (our operator session) and
  ``X-Forwarded-*``/``Forwarded`` are dropped; bodies are at most the door's 256 KiB and
  uncompressed (415), so a ticket in them can be read.
- tickets (`dispatcher.http.ticketswap`): replaced by the CAD's id once delivered; before
  that 409 (the call is not in the CAD yet), an unknown one 404, never forwarded.
- budgets (`dispatcher.http.cadbudget`): our creations first, read-backs second,
  passthrough what is left; beyond its share 429 with ``Retry-After``.
- the CAD down (our breaker, `dispatcher.circuit`, is open): 503 with ``Retry-After`` at
  once, instead of waiting on timeouts. The breaker is the workers': a passed-through
  request's failure does not move it.
- the answer unchanged and streamed: status, body (bytes as sent, ``Content-Encoding``
  kept), ``Content-Type`` (none when the CAD sent none), ``Retry-After`` and the other
  end-to-end headers; at most `MAX_ANSWER_BYTES` and `ANSWER_DEADLINE_S` (a larger or
  slower answer is cut). Connect and read timeouts are the CAD client's
  (``DISPATCHER_READ_TIMEOUT_S``): 502 when the CAD cannot be reached, 504 when it does
  not answer in time.

Our own answers are the CAD's shapes: v1 one line of plain text, v2 problem+json. The
keys (ours and the client's) are never logged: lines name the method, the redacted path,
the status and the time.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import redis
import requests
from flask import Flask, Response, current_app, request

from dispatcher import circuit
from dispatcher import clock as shared_clock
from dispatcher.http import doorrules
from dispatcher.http.cadbudget import CadBudget
from dispatcher.http.ingest import RETRY_AFTER_S, door
from dispatcher.http.ticketswap import Unresolved, swap_body, swap_segments
from dispatcher.keys import Keys
from dispatcher.redact import LineRedactor
from dispatcher.settings import Settings
from dispatcher.tickets import Tickets

log = logging.getLogger("dispatcher.web")

#: v1 categories of the CAD's API (its documentation's sections).
V1_CATEGORIES = frozenset({"general", "civilian", "emergency"})
#: Methods passed through under /v2/.
V2_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
#: Largest answer passed back, bytes (a full call list is well under a MiB).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: Longest an answer may take to pass back whole, seconds (a thread is held meanwhile).
ANSWER_DEADLINE_S = 60.0
#: Bytes read from the CAD at a time (and written on).
CHUNK_BYTES = 64 * 1024
#: Request headers never forwarded: hop-by-hop (RFC 9110 7.6.1), ours, and what requests
#: computes itself.
DROPPED_REQUEST = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "cookie", "content-length",
    "expect", "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
    "x-forwarded-port", "x-forwarded-prefix", "x-real-ip",
})
#: Answer headers not passed back: hop-by-hop, and what our server writes itself.
DROPPED_ANSWER = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "server", "date", "set-cookie",
})
EXTENSION = "dispatcher.passthrough"

_CONTROL = frozenset(chr(c) for c in range(32)) | {"\x7f", "\\"}
#: Characters left as they are in a rebuilt path segment (RFC 3986 pchar less "%").
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"


class Passthrough:
    """Forwards requests to the CAD: one `requests.Session` per thread."""

    def __init__(self, settings: Settings, client: redis.Redis,
                 session_factory: Callable[[], requests.Session] = requests.Session,
                 clock: Callable[[], float] = shared_clock.now) -> None:
        self.settings = settings
        self.client = client
        self.base = settings.api_url.rstrip("/")
        self.budgets = CadBudget(client, settings, clock)
        self.tickets = Tickets(client, settings.prefix)
        self.keys = Keys(settings.prefix)
        self.clock = clock
        self._session_factory = session_factory
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            session.headers.clear()  # the client's headers only (no gzip it did not ask)
            self._local.session = session
        return session

    # -- the request -------------------------------------------------------------------

    def handle(self) -> Response | None:
        """The answer to this request if it is the CAD's shape; None: not ours to pass."""
        method, path = request.method, request.path
        version = _version(method, path)
        if version is None:
            return None
        answer = _Answers(version)
        segments = path.split("/")[2 if version == 2 else 1:]
        if not all(_clean(s) for s in segments):
            return answer(400, "Bad Request", "INVALID PATH: empty, '.' or '..' segments and "
                          "control characters are not passed to the CAD")
        try:
            closed = self._breaker_wait()
            if closed:
                return answer(503, "Service Unavailable",
                              f"CAD UNAVAILABLE: the CAD is not answering (circuit open); "
                              f"retry in {closed} s", **{"Retry-After": str(closed)})
            raw = doorrules.read_body(request)
            presented = _presented_key(version, raw)
            try:
                segments = swap_segments(segments, self.tickets.cad_id)
                raw = swap_body(raw, self.tickets.cad_id)
            except Unresolved as exc:
                title = "Conflict" if exc.status == 409 else "Not Found"
                head = "CALL NOT IN THE CAD YET" if exc.status == 409 else "CALL NOT FOUND"
                return answer(exc.status, title, f"{head}: {exc}")
            budget = self.budgets.budget(method, segments, version, presented)
            wait = self.budgets.take(budget, presented)
        except redis.RedisError as exc:
            return answer(503, "Service Unavailable",
                          f"QUEUE UNAVAILABLE: Redis failed ({type(exc).__name__}); retry in "
                          f"{RETRY_AFTER_S} s", **{"Retry-After": str(RETRY_AFTER_S)})
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return answer(429, "Too Many Requests",
                          f"TOO MANY REQUESTS: this key's share of {budget.endpoint} is used "
                          f"(calls go first); retry in {seconds} s",
                          **{"Retry-After": str(seconds)})
        prefix = "/v2/" if version == 2 else "/"
        url = self.base + prefix + "/".join(quote(s, safe=_SEGMENT_SAFE) for s in segments)
        query = request.query_string.decode("latin-1")
        if query:
            url += "?" + query
        return self._forward(method, url, raw, answer, presented)

    def _breaker_wait(self) -> int:
        """Seconds until the open breaker lets a probe through; 0 when it is not open."""
        now = self.clock()
        view = circuit.read(self.client, self.keys.prefix, now)
        if view.state != "open":
            return 0
        until = float(self.client.hget(self.keys.circuit, "open_until") or 0)
        return max(1, math.ceil(until - now))

    # -- the CAD -----------------------------------------------------------------------

    def _forward(self, method: str, url: str, raw: bytes, answer: _Answers,
                 presented: str) -> Response:
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in DROPPED_REQUEST}
        safe = LineRedactor([door().key or "", presented])
        shown = safe(request.path, 200)
        started = time.monotonic()
        s = self.settings
        try:
            upstream = self._session().request(
                method, url, data=raw or None, headers=headers, allow_redirects=False,
                timeout=(s.connect_timeout_s, s.read_timeout_s), stream=True)
        except requests.Timeout as exc:
            status = 502 if isinstance(exc, requests.ConnectTimeout) else 504
            log.warning("passthrough: %s %s: %s (%s)", method, shown, status, type(exc).__name__)
            return answer(status, "Gateway Timeout" if status == 504 else "Bad Gateway",
                          "CAD DID NOT ANSWER IN TIME" if status == 504 else
                          "CAD UNREACHABLE: could not connect in time")
        except requests.RequestException as exc:
            log.warning("passthrough: %s %s: 502 (%s)", method, shown, type(exc).__name__)
            return answer(502, "Bad Gateway", f"CAD UNREACHABLE: {type(exc).__name__}")
        length = upstream.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
            upstream.close()
            return answer(502, "Bad Gateway", f"CAD ANSWER TOO LARGE: over {MAX_ANSWER_BYTES}"
                          " bytes")
        kept = [(name, value) for name, value in upstream.headers.items()
                if name.lower() not in DROPPED_ANSWER]
        log.debug("passthrough: %s %s: %d in %d ms", method, shown, upstream.status_code,
                  (time.monotonic() - started) * 1000)
        answer_ = Response(_stream(upstream, shown), status=upstream.status_code,
                           headers=kept, direct_passthrough=True)
        if "Content-Type" not in upstream.headers:
            del answer_.headers["Content-Type"]  # Flask's default: not the CAD's
        return answer_


def _stream(upstream: requests.Response, shown: str) -> Iterator[bytes]:
    """The CAD's answer as it arrives, bytes as sent, bounded in size and time."""
    deadline = time.monotonic() + ANSWER_DEADLINE_S
    size = 0
    try:
        for chunk in upstream.raw.stream(CHUNK_BYTES, decode_content=False):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES or time.monotonic() > deadline:
                log.warning("passthrough: %s: answer cut (over %d bytes or %g s)", shown,
                            MAX_ANSWER_BYTES, ANSWER_DEADLINE_S)
                return
            yield chunk
    except Exception as exc:  # noqa: BLE001 - urllib3's errors: the client sees a cut answer
        log.warning("passthrough: %s: answer cut (%s)", shown, type(exc).__name__)
    finally:
        upstream.close()


class _Answers:
    """Our own answers in the CAD's shape: v1 one line of text, v2 problem+json."""

    def __init__(self, version: int) -> None:
        self.version = version

    def __call__(self, status: int, title: str, text: str, **headers: str) -> Response:
        if self.version == 2:
            return door().problem(status, title, text, **headers)
        return door().refuse(text, status, **headers)


def _version(method: str, path: str) -> int | None:
    """2 or 1 when the request has one of the CAD's shapes; None otherwise."""
    if path.startswith("/v2/"):
        return 2 if method in V2_METHODS else None
    parts = path.split("/")
    if method == "POST" and len(parts) == 3 and parts[1] in V1_CATEGORIES:
        return 1
    return None


def _clean(segment: str) -> bool:
    return segment not in ("", ".", "..") and not any(ch in _CONTROL for ch in segment)


def _presented_key(version: int, raw: bytes) -> str:
    """The client's own key: v2's Bearer token, v1's body ``key`` ("" when none)."""
    if version == 2:
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    try:  # read as the CAD reads it (the last of duplicate members wins), not strictly
        body = json.loads(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return ""
    key = body.get("key") if isinstance(body, dict) else None
    return key if isinstance(key, str) else ""


def install(app: Flask) -> None:
    """Make the passthrough available to the 404 handler (after the door: it shares it)."""
    d = app.extensions["dispatcher.door"]
    app.extensions[EXTENSION] = Passthrough(d.settings, d.producer.client)


def forward() -> Any:
    """The passthrough's answer to this request, or None (the 404 handler's question)."""
    found: Passthrough | None = current_app.extensions.get(EXTENSION)
    return None if found is None or request.url_rule is not None else found.handle()
