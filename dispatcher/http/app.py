"""The ``web`` process's Flask app: the ingest doors, ``/openapi.json``, the operations
page (with ``/metrics`` and ``/healthz``), and the error answers, on one app.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from flask import Flask, Response

from dispatcher.http import clientaddr, handlers, lean, passthrough, removal
from dispatcher.http.body import MAX_JSON_DEPTH
from dispatcher.http.ingest import (
    MAX_BODY_BYTES,
    MAX_CALLS_PER_REQUEST,
    MAX_IDEMPOTENCY_HEADER,
    RETRY_AFTER_S,
    SERVER_MAX_BODY_BYTES,
    Door,
)
from dispatcher.http.openapi import openapi_document
from dispatcher.http.opspage import ops_blueprint
from dispatcher.producer import Producer
from dispatcher.settings import Settings


def create_app(settings: Settings, producer: Producer | None = None) -> Flask:
    """The Flask app; one Producer (one Redis pool, one Celery publisher) per process."""
    # Named "dispatcher" (its logger); templates/ and static/ live beside this module.
    app = Flask("dispatcher", root_path=str(Path(__file__).parent))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # The create routes' ordinary requests are served in front of Flask (the same logic,
    # without the framework's cost); inside ProxyFix, so the client address is the same.
    lean.install(app)
    clientaddr.install(app, settings.trusted_proxies)
    door = Door.for_settings(settings, producer)
    door.install(app)
    removal.install(app)
    _openapi_bytes()  # built once, at start
    app.add_url_rule("/openapi.json", view_func=openapi, methods=["GET"])
    # The page and /metrics show the default community (the only one without the file).
    app.register_blueprint(ops_blueprint(door.settings, door.producer.client, door.live))
    handlers.install(app)
    passthrough.install(app)  # asked by the 404 handler: every route above wins
    return app


def openapi() -> Response:
    """``GET /openapi.json``."""
    return Response(_openapi_bytes(), mimetype="application/json")


@functools.cache
def _openapi_bytes() -> bytes:
    """The OpenAPI description of the doors, with their limits, as served."""
    document = openapi_document(
        max_body_bytes=MAX_BODY_BYTES, max_calls=MAX_CALLS_PER_REQUEST,
        max_depth=MAX_JSON_DEPTH, retry_after_s=RETRY_AFTER_S,
        max_idempotency_header=MAX_IDEMPOTENCY_HEADER, server_max_body_bytes=SERVER_MAX_BODY_BYTES,
    )
    return json.dumps(document, indent=2).encode()
