"""Operations: the page at ``/``, ``/metrics`` (Prometheus) and ``/healthz``."""

from __future__ import annotations

import html
import json
from typing import Any

import redis
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dispatcher.deadletters import DeadLetters
from dispatcher.metrics import registry_for
from dispatcher.records import Records, iso
from dispatcher.settings import Settings


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def ops_blueprint(settings: Settings, client: redis.Redis) -> Blueprint:
    """Routes for operators, reading state from Redis on each request."""
    bp = Blueprint("ops", __name__)
    records = Records(client, settings.prefix)
    dead = DeadLetters(client, settings.prefix)
    registry = registry_for(client, settings.prefix)

    @bp.get("/metrics")
    def metrics() -> Response:
        try:
            return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
        except redis.RedisError as exc:
            return _text(f"redis unavailable: {type(exc).__name__}", 503)

    @bp.get("/healthz")
    def healthz() -> Response:
        try:
            client.ping()
            stats = records.stats()
        except redis.RedisError as exc:
            body = {"status": "down", "redis": False, "error": type(exc).__name__}
            return Response(json.dumps(body), status=503, mimetype="application/json")
        body = {"status": "ok", "redis": True, "circuit": stats["circuit"],
                "queued": stats["queued"], "oldest_age_s": stats["oldest_age_s"],
                "dead": stats["dead"]}
        return Response(json.dumps(body), status=200, mimetype="application/json")

    @bp.get("/")
    def ops_page() -> Response:
        try:
            stats = records.stats()
            letters = dead.list(limit=50)
        except redis.RedisError as exc:
            return _text(f"redis unavailable: {type(exc).__name__}", 503)
        return Response(_render(stats, letters), mimetype="text/html")

    return bp


def _render(stats: dict[str, Any], letters: list[Any]) -> str:
    e = html.escape
    cards = "".join(
        f"<div class=card><b>{e(str(stats[k]))}</b><span>{e(label)}</span></div>"
        for k, label in (("queued", "queued"), ("scheduled", "retrying"),
                         ("in_flight", "in flight"), ("delivered", "delivered"),
                         ("dead", "dead letters"), ("circuit", "CAD circuit"),
                         ("oldest_age_s", "oldest age (s)"))
    )
    rows = "".join(
        f"<tr><td><code>{e(r.id)}</code></td><td>{e(r.reason or '')}</td>"
        f"<td>{e(str(r.status_code or ''))}</td><td>{e((r.response or r.last_error or '')[:80])}"
        f"</td><td>{e(str(r.call.get('caller', '')))}</td>"
        f"<td>{e(str(r.call.get('location', '')))}</td><td>{e(iso(r.dead_at) or '')}</td></tr>"
        for r in letters
    ) or "<tr><td colspan=7>No dead letters.</td></tr>"
    return f"""<!doctype html><html><head><meta charset=utf-8>
<meta http-equiv=refresh content=5><title>sonoran-dispatcher</title><style>
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}
.cards{{display:flex;gap:1em;flex-wrap:wrap}}
.card{{border:1px solid #ccc;border-radius:6px;padding:.8em 1.2em;min-width:7em}}
.card b{{display:block;font-size:1.6em}} table{{border-collapse:collapse;margin-top:1em}}
td,th{{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}}</style></head>
<body><h1>sonoran-dispatcher</h1><div class=cards>{cards}</div>
<h2>Dead letters</h2><p>Replay with <code>dispatcher dlq replay ID</code>.</p>
<table><tr><th>id</th><th>reason</th><th>status</th><th>answer</th><th>caller</th>
<th>location</th><th>dead at</th></tr>{rows}</table></body></html>"""


