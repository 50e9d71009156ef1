"""What monitoring reads: ``/metrics`` (Prometheus) and ``/healthz`` (JSON), always open."""

from __future__ import annotations

import json
from typing import Any

import redis
from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dispatcher.health import health_report
from dispatcher.http.opsstate import ops
from dispatcher.metrics import redis_memory


def metrics() -> Response:
    """``GET /metrics``: every figure, read from Redis now."""
    try:
        # The exact header prometheus-client defines (as mimetype=, Flask would add a
        # second charset, which strict scrapers such as Prometheus 3 refuse).
        return Response(generate_latest(ops().registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
    except redis.RedisError as exc:
        return Response(f"redis unavailable: {type(exc).__name__}", status=503,
                        mimetype="text/plain")


def healthz() -> Response:
    """``GET /healthz``: 200 while Redis answers, with the figures; 503 when it does not."""
    o = ops()
    try:
        body = health_report(o.records.stats(), o.beats.all(), redis_memory(o.client))
    except redis.RedisError as exc:
        body = {"status": "down", "redis": False, "error": type(exc).__name__}
        return _json(body, 503)
    return _json(body, 200)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")
