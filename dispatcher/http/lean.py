"""The lean path: the create routes' common request served in front of Flask.

Flask and werkzeug cost more CPU per request than the door's own work does (building a
request context, routing, the `Response` object: docs/PERFORMANCE.md, "Doors, lean
path"). `LeanDoor` wraps the Flask app's WSGI callable (inside werkzeug's ``ProxyFix``
when proxies are trusted, so the client address is the same one) and serves a
``POST /emergency/call_911`` or ``POST /v2/emergency/servers/{serverId}/calls/911``
itself when the request is the ordinary kind:

- the path is plain ASCII, the body uncompressed (no ``Content-Encoding`` beyond
  ``identity``) with a ``Content-Length`` within `MAX_BODY_BYTES`;
- it does not ask to wait (no ``Prefer`` header);
- the communities have not changed since the doors were made (a reload is Flask's).

Everything else, and every other route, goes to the Flask app as before. The logic is
not repeated here: both ways call `create_v1` / `create_v2` (`dispatcher.http.create`)
with the same `Door`, so checks, refusals, throttles, idempotency keys, the refusal log
and its redaction are the same code; this module only reads the request off the WSGI
environ and writes the `Reply` back the way werkzeug's `Response` would (same status
line, headers and body; tests/http/test_http_lean.py compares the two).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.utils import get_content_type

from dispatcher.http import handlers
from dispatcher.http.create import create_v1, create_v2
from dispatcher.http.ingest import EXTENSION, MAX_BODY_BYTES, V1_PATH, Asked, Door, Reply

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: The v2 create route (werkzeug's default converter: one non-empty segment).
_V2 = re.compile(r"/v2/emergency/servers/([^/]+)/calls/911")


class LeanDoor:
    """WSGI middleware: the create routes' ordinary requests, without the framework."""

    def __init__(self, app: Flask, inner: WSGIApp) -> None:
        self.app = app
        self.inner = inner
        self._statuses: dict[int, str] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            path = environ.get("PATH_INFO", "")
            if path == V1_PATH:
                server_id = None
            elif path.startswith("/v2/") and (found := _V2.fullmatch(path)):
                server_id = found.group(1)
            else:
                return self.inner(environ, start_response)
            length = _ordinary(environ, path)
            d = self._door() if length is not None else None
            if d is not None and length is not None:
                return self._serve(d, environ, start_response, path, server_id, length)
        return self.inner(environ, start_response)

    def _door(self) -> Door | None:
        """The app's current `Door`, or None when a reload must make it anew (Flask's)."""
        found: Door | None = self.app.extensions.get(EXTENSION)
        return found if found is not None and found.fresh() else None

    def _serve(self, d: Door, environ: dict[str, Any], start_response: Callable[..., Any],
               path: str, server_id: str | None, length: int) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        asked = Asked(environ, path, environ.get("REMOTE_ADDR") or "-",
                      lambda: stream.read(length) if length else b"")
        try:
            reply = create_v1(d, asked) if server_id is None else create_v2(d, asked, server_id)
        except Exception as exc:  # noqa: BLE001 - the app's 500, as Flask's handler gives it
            reply = handlers.internal_reply(d, asked, exc)
        return self._send(reply, start_response)

    def _send(self, reply: Reply, start_response: Callable[..., Any]) -> list[bytes]:
        """Write a `Reply` as werkzeug's `Response` of it would be written."""
        body = reply.body.encode()
        headers = [*reply.headers.items(),
                   ("Content-Type", get_content_type(reply.mimetype, "utf-8")),
                   ("Content-Length", str(len(body)))]
        start_response(self._status(reply.status), headers)
        return [body]

    def _status(self, code: int) -> str:
        line = self._statuses.get(code)
        if line is None:
            line = self._statuses[code] = f"{code} {HTTP_STATUS_CODES.get(code, 'UNKNOWN').upper()}"
        return line


def _ordinary(environ: dict[str, Any], path: str) -> int | None:
    """The body's length when the lean path can serve this request; None: Flask's."""
    if not path.isascii() or environ.get("SCRIPT_NAME") or "HTTP_PREFER" in environ:
        return None
    encoding = environ.get("HTTP_CONTENT_ENCODING")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        return None
    text = environ.get("CONTENT_LENGTH")
    if not text or not text.isdigit() or not text.isascii():
        return None
    length = int(text)
    return length if length <= MAX_BODY_BYTES else None


def install(app: Flask) -> None:
    """Put the lean path in front of ``app``'s WSGI callable (before ProxyFix wraps it)."""
    app.wsgi_app = LeanDoor(app, app.wsgi_app)  # type: ignore[method-assign]


def create_request(command: str, path: str, headers: dict[str, str]) -> bool:
    """Whether a request the WSGI server has read (method, unquoted path, its header
    names as CGI keys) is a create request that does not ask to wait: one that never
    holds a thread for long (`dispatcher.http.server` serves these on threads of their
    own)."""
    return (command == "POST" and "PREFER" not in headers
            and (path == V1_PATH or (path.startswith("/v2/") and _V2.fullmatch(path) is not None)))
