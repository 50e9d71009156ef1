"""The ``web`` process: HTTP ingest (the seed's own request), metrics, health, ops page.

``POST /emergency/call_911`` takes the seed's request body byte for byte: ``id``,
``key`` and ``type`` are checked against our configuration and refused with the
seed's own 400 texts, then each call in ``data`` is queued and the answer is
``EMERGENCY CALL QUEUED ID: <ids>``. Scripts that parse ``ID:`` then digits keep working
for the first id. The v2 shape is served too, with problem+json errors.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

import redis
from flask import Flask, Response, request

from dispatcher.call import Call
from dispatcher.errors import InvalidCall, QueueUnavailable
from dispatcher.ops import ops_blueprint
from dispatcher.producer import Producer
from dispatcher.settings import Settings

log = logging.getLogger("dispatcher.web")

#: Largest request body accepted (413 beyond it).
MAX_BODY_BYTES = 256 * 1024
#: Most calls in one request's ``data`` array.
MAX_CALLS_PER_REQUEST = 50
#: What a client should wait before retrying when the queue is unreachable.
RETRY_AFTER_S = 5


def _text(body: str, status: int, **headers: str) -> Response:
    return Response(body, status=status, mimetype="text/plain", headers=headers)


def _problem(status: int, title: str, detail: str, **headers: str) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "instance": request.path}
    return Response(json.dumps(body), status=status, mimetype="application/problem+json",
                    headers=headers)


def _same(given: Any, expected: str | None) -> bool:
    if not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def create_app(settings: Settings, producer: Producer | None = None) -> Flask:
    """The Flask app; one Producer (one Redis pool, one Celery publisher) per process."""
    app = Flask("dispatcher")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    prod = producer or Producer(settings)
    client: redis.Redis = prod.client
    key = settings.api_key.reveal() if settings.api_key else None

    def queue_calls(calls: list[Call]) -> list[str]:
        return [prod.enqueue(c, "http") for c in calls]

    @app.post("/emergency/call_911")
    def call_911() -> Response:
        if not settings.community_id or not key:
            return _text("DISPATCHER NOT CONFIGURED: SONORAN_COMMUNITY_ID AND SONORAN_API_KEY "
                         "MUST BE SET", 503)
        try:
            body = json.loads(request.get_data(cache=False) or b"")
        except ValueError:
            return _text("INVALID REQUEST TYPE", 400)
        if not isinstance(body, dict) or body.get("type") != "CALL_911":
            return _text("INVALID REQUEST TYPE", 400)
        if not _same(body.get("id"), settings.community_id):
            return _text("INVALID COMMUNITY ID", 400)
        if not _same(body.get("key"), key):
            return _text("INVALID API KEY", 400)
        data = body.get("data")
        if not isinstance(data, list) or not data:
            return _text("INVALID CALL: data must be a non-empty array of call objects", 400)
        if len(data) > MAX_CALLS_PER_REQUEST:
            return _text(f"INVALID CALL: at most {MAX_CALLS_PER_REQUEST} calls per request", 400)
        calls = []
        for i, obj in enumerate(data):
            try:
                calls.append(Call.parse(obj))
            except InvalidCall as exc:
                return _text(f"INVALID CALL: data[{i}]: {exc}", 400)
        try:
            ids = queue_calls(calls)
        except QueueUnavailable as exc:
            return _text(f"QUEUE UNAVAILABLE: {exc}", 503, **{"Retry-After": str(RETRY_AFTER_S)})
        return _text("EMERGENCY CALL QUEUED ID: " + ",".join(ids), 200)

    @app.post("/v2/emergency/servers/<server_id>/calls/911")
    def call_911_v2(server_id: str) -> Response:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not key or not _same(token, key):
            return _problem(401, "Unauthorized", "Invalid or missing API key")
        try:
            body = json.loads(request.get_data(cache=False) or b"")
        except ValueError:
            return _problem(400, "Bad Request", "the body is not valid JSON")
        if not isinstance(body, dict):
            return _problem(400, "Bad Request", "the body must be a JSON object")
        try:
            call = Call.parse({**body, "serverId": server_id})
        except InvalidCall as exc:
            return _problem(400, "Bad Request", str(exc))
        try:
            (call_id,) = queue_calls([call])
        except QueueUnavailable as exc:
            return _problem(503, "Service Unavailable", str(exc),
                            **{"Retry-After": str(RETRY_AFTER_S)})
        return Response(json.dumps({"callId": call_id, "status": "queued"}), status=200,
                        mimetype="application/json")

    app.register_blueprint(ops_blueprint(settings, client))

    @app.errorhandler(413)
    def too_large(_: Any) -> Response:
        return _text(f"REQUEST TOO LARGE: at most {MAX_BODY_BYTES} bytes", 413)

    @app.errorhandler(404)
    def not_found(_: Any) -> Response:
        return _text("NOT FOUND", 404)

    @app.errorhandler(405)
    def not_allowed(_: Any) -> Response:
        return _text("METHOD NOT ALLOWED", 405)

    return app


def serve(settings: Settings, host: str = "0.0.0.0", threads: int = 16) -> None:
    """Serve the app with waitress (a production WSGI server) on settings.port."""
    from waitress import serve as waitress_serve

    app = create_app(settings)
    log.info("web: listening on http://%s:%d", host, settings.port)
    waitress_serve(app, host=host, port=settings.port, threads=threads, ident="dispatcher",
                   _quiet=True)
