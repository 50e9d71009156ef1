"""Operations: the page at ``/``, ``/metrics`` (Prometheus) and ``/healthz``.

The page shows the figures at a glance, the last hour as a chart, the dead letters
(filtered) with replay and purge, and a call lookup. It works without JavaScript.

Security (`dispatcher.http.auth`). With ``DISPATCHER_OPS_TOKEN`` set, the page and its
actions need a session (signed cookie, kept in Redis, ended by logout); failed logins
are throttled per client address. Every state-changing route is POST only and checks
the form's CSRF token against the session's in constant time *and* that Origin (or,
without it, Referer) names this host. Without the token the page is read-only and
served to loopback clients only; ``/metrics`` and ``/healthz`` are always open.
Everything shown is escaped by Jinja and user text is isolated in ``<bdi>`` (callers,
locations and descriptions are user input: U+202E cannot reverse a cell), a strict
Content-Security-Policy allows no script at all, and no secret is ever rendered. The
dead-letter table reads display fields only (`Records.display_many`); the raw text of
an invalid entry is read only when that one call is looked up.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

import redis
from flask import Blueprint, Request, Response, redirect, render_template, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dispatcher.broker import Publisher
from dispatcher.deadletters import DeadLetters, Filter
from dispatcher.heartbeat import Heartbeats
from dispatcher.history import History, chart
from dispatcher.http.auth import (
    LOOPBACK_HINT,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    OperatorAuth,
    safe_next,
    same_origin,
)
from dispatcher.http.clientaddr import client_address, local_request
from dispatcher.http.refusals import RefusalLog
from dispatcher.http.throttle import LoginThrottle
from dispatcher.metrics import KNOWN_REASONS, health_report, redis_memory, registry_for
from dispatcher.records import CallRecord, Records
from dispatcher.schedule import Pump
from dispatcher.settings import Settings
from dispatcher.since import parse_since

log = logging.getLogger("dispatcher.ops")

__all__ = ["SESSION_COOKIE", "OperatorAuth", "View", "ops_blueprint", "same_origin"]

#: Dead letters listed on the page (the count of all matching ones is shown too).
PAGE_LIMIT = 100
#: Query parameters the page keeps across an action (filters and the looked-up call).
VIEW_PARAMS = ("reason", "since", "search", "call", "refresh")

_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True)
class View:
    """The dead-letter filter as the operator typed it, and what it means."""

    reason: str
    since: str
    search: str
    error: str | None
    flt: Filter

    @classmethod
    def from_args(cls, args: Any, now: float) -> View:
        reason = str(args.get("reason", "")).strip()
        since = str(args.get("since", "")).strip()
        search = str(args.get("search", "")).strip()
        error = None
        since_ts = None
        if since:
            try:
                since_ts = parse_since(since, now)
            except ValueError:
                error = "“since” is not a time: use ISO 8601 (2025-01-31T18:00Z) or 30m, 2h, 1d"
        return cls(reason, since, search, error,
                   Filter(reason or None, since_ts, None, search or None))

    @property
    def narrowed(self) -> bool:
        return bool(self.reason or self.since or self.search)


def ops_blueprint(settings: Settings, client: redis.Redis) -> Blueprint:
    """Routes for operators, reading state from Redis on each request."""
    bp = Blueprint("ops", __name__, static_folder="static", static_url_path="/ops/static")
    records = Records(client, settings.prefix)
    dead = DeadLetters(client, settings.prefix)
    beats = Heartbeats(client, settings.prefix)
    history = History(client, settings.prefix)
    registry = registry_for(client, settings.prefix)
    auth = OperatorAuth(settings.ops_token, client, settings.prefix)
    throttle = LoginThrottle(client, settings.prefix)
    refusals = RefusalLog(log)
    kick = _Kick(settings, client)

    @bp.before_request
    def loopback_only() -> Response | None:
        """Without an operator token the page is for this machine's own users only."""
        if auth.enabled or request.endpoint in ("ops.metrics", "ops.healthz"):
            return None
        if local_request(request):
            return None
        refusals.refused(client_address(request), f"ops: 403 {request.path} (no operator "
                         "token: loopback clients only)", logging.WARNING)
        return Response(LOOPBACK_HINT + "\n", status=403, mimetype="text/plain")

    @bp.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> Response:
        return _html(render_template("ops/down.html", error=type(exc).__name__), 503)

    @bp.after_request
    def headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        if resp.mimetype == "text/html":
            resp.headers["Content-Security-Policy"] = _CSP
            resp.headers["X-Frame-Options"] = "DENY"
            resp.headers["Referrer-Policy"] = "same-origin"
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @bp.get("/metrics")
    def metrics() -> Response:
        try:
            # The exact header prometheus-client defines (as mimetype=, Flask would add a
            # second charset, which strict scrapers such as Prometheus 3 refuse).
            return Response(generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})
        except redis.RedisError as exc:
            return Response(f"redis unavailable: {type(exc).__name__}", status=503,
                            mimetype="text/plain")

    @bp.get("/healthz")
    def healthz() -> Response:
        try:
            client.ping()
            body = health_report(records.stats(), beats.all(), redis_memory(client))
        except redis.RedisError as exc:
            body = {"status": "down", "redis": False, "error": type(exc).__name__}
            return _json(body, 503)
        return _json(body, 200)

    @bp.get("/login")
    def login_form() -> Response | Any:
        if not auth.enabled:
            return redirect("/", 303)
        return _html(render_template("ops/login.html", error=None, next=_next_path()))

    @bp.post("/login")
    def login() -> Response | Any:
        if not auth.enabled:
            return redirect("/", 303)
        if not same_origin(request):
            return _html(render_template("ops/login.html", error="Refused: the form did not "
                                         "come from this page.", next="/"), 403)
        addr = client_address(request)
        verdict = throttle.check(addr)
        if verdict.allowed and not auth.token_ok(request.form.get("token", "")):
            verdict = throttle.failed(addr)
            refusals.refused(addr, "ops: failed login", logging.WARNING)
            if verdict.allowed:
                return _html(render_template("ops/login.html", error="Wrong operator token.",
                                             next=_next_path()), 401)
        if not verdict.allowed:  # locked out: the token is not even compared
            wait = verdict.retry_after_s
            refusals.refused(addr, f"ops: 429 login locked out for {wait} s", logging.WARNING)
            locked = _html(render_template(
                "ops/login.html", next=_next_path(),
                error=f"Too many failed logins from your address: try again in {wait} s."), 429)
            locked.headers["Retry-After"] = str(wait)
            return locked
        throttle.succeeded(addr)
        log.info("ops: operator logged in from %s", addr)
        resp = redirect(_next_path(), 303)
        resp.set_cookie(SESSION_COOKIE, auth.new_session(), max_age=SESSION_MAX_AGE_S,
                        httponly=True, samesite="Strict", secure=_secure(request), path="/")
        return resp

    @bp.post("/logout")
    def logout() -> Response | Any:
        if not auth.action_allowed(request):
            return _forbidden()
        auth.end_session(request)
        log.info("ops: operator logged out from %s", client_address(request))
        resp = redirect("/login", 303)
        resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict",
                           secure=_secure(request))
        return resp

    @bp.get("/")
    def page() -> Response | Any:
        csrf = auth.csrf_of(request)
        if auth.enabled and csrf is None:
            return redirect("/login?" + urlencode({"next": request.full_path}), 303)
        now = time.time()
        view = View.from_args(request.args, now)
        try:
            stats = records.stats()
            workers = beats.all()
            letters, total = _matching(dead, view)
            lookup_id = str(request.args.get("call", "")).strip()
            lookup = records.get(lookup_id) if lookup_id else None
            graph = chart(history.points(), now)
            memory = redis_memory(client)
        except redis.RedisError as exc:
            return _html(render_template("ops/down.html", error=type(exc).__name__), 503)
        reasons = sorted(set(KNOWN_REASONS) | set(stats["dead_by_reason"]))
        query = _query_builder(request.args)
        return _html(render_template(
            "ops/page.html", stats=stats, workers=workers,
            alive=sum(1 for w in workers if w.alive), letters=letters, total=total,
            view=view, reasons=reasons, lookup_id=lookup_id, lookup=lookup,
            lookup_json=lookup.to_json(settings.server_id) if lookup else None,
            chart=graph, csrf=csrf, writable=auth.enabled, limit=PAGE_LIMIT,
            back=query()[2:], query=query, notice=_notice(request.args),
            refresh=request.args.get("refresh") == "on", when=_when, now=now,
            memory_pct=memory[0] * 100 // memory[1] if memory and memory[1] else None))

    @bp.post("/dead-letters/<call_id>/replay")
    def replay_one(call_id: str) -> Response | Any:
        if not auth.action_allowed(request):
            return _forbidden()
        outcome = dead.replay(call_id, actor=_actor())
        if outcome == "replayed":
            kick.tick()
            return _back(done="replayed", n=1)
        return _back(done=outcome, n=0)

    @bp.post("/dead-letters/<call_id>/purge")
    def purge_one(call_id: str) -> Response | Any:
        if not auth.action_allowed(request):
            return _forbidden()
        done = dead.purge(call_id, actor=_actor())
        return _back(done="purged" if done else "missing", n=1 if done else 0)

    @bp.post("/dead-letters/replay")
    def replay_matching() -> Response | Any:
        if not auth.action_allowed(request):
            return _forbidden()
        view = View.from_args(request.form, time.time())
        if view.error:
            return _back(done="bad_filter", n=0)
        ids = [r.id for r in dead.iter(view.flt)]
        replayed = sum(1 for i in ids if dead.replay(i, actor=_actor()) == "replayed")
        if replayed:
            kick.tick()
        log.info("ops: %s replayed %d dead letter(s) matching %s", _actor(), replayed, view.flt)
        return _back(done="replayed", n=replayed)

    return bp


class _Kick:
    """One schedule tick after a replay, so replayed calls get a message at once (as the
    CLI does); the scheduler would release them within its next tick anyway."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self._pump: Pump | None = None
        self._lock = threading.Lock()

    def tick(self) -> None:
        try:
            with self._lock:
                if self._pump is None:
                    self._pump = Pump(self.client, self.settings, Publisher(self.settings))
                self._pump.tick()
        except Exception as exc:  # the scheduler releases them on its own next tick
            log.warning("ops: replayed calls wait for the scheduler (%s)", type(exc).__name__)


def _matching(dead: DeadLetters, view: View) -> tuple[list[CallRecord], int]:
    """The first PAGE_LIMIT dead letters of the view, and how many match in all."""
    if view.error:
        return [], 0
    if not (view.reason or view.search):  # the time range alone is one ZCOUNT
        low = "-inf" if view.flt.since is None else view.flt.since
        shown = itertools.islice(dead.iter(view.flt, page=PAGE_LIMIT, light=True), PAGE_LIMIT)
        return list(shown), int(dead.client.zcount(dead.keys.dead, low, "+inf"))
    letters: list[CallRecord] = []
    total = 0
    for record in dead.iter(view.flt, light=True):
        total += 1
        if len(letters) < PAGE_LIMIT:
            letters.append(record)
    return letters, total


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/html")


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _forbidden() -> Response:
    return _html(render_template("ops/forbidden.html"), 403)


def _secure(req: Request) -> bool:
    # Behind a TLS proxy the cookie should still be Secure; a spoofed header over plain
    # HTTP only costs the spoofer their own cookie.
    return req.is_secure or req.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _actor() -> str:
    return f"web:{client_address(request)}"


def _next_path() -> str:
    """Where to go after login: a path on this site only (no open redirect)."""
    return safe_next(str(request.values.get("next", "/")))


def _query_builder(args: Any) -> Callable[..., str]:
    """For links: "/?" and the current view, some parameters changed (None drops one)."""
    def query(**changes: str | None) -> str:
        kept = {k: v for k, v in args.items() if k in VIEW_PARAMS and v} | changes
        return "/?" + urlencode([(k, v) for k, v in kept.items() if v])
    return query


def _back(done: str, n: int) -> Response | Any:
    """Post/redirect/get: back to the view the form came from, with a notice."""
    kept = [(k, v) for k, v in parse_qsl(request.form.get("back", "")) if k in VIEW_PARAMS]
    return redirect("/?" + urlencode([*kept, ("done", done), ("n", str(n))]), 303)


_NOTICES = {
    "replayed": "Replayed {n} dead letter(s): back in line, oldest first, sent with the "
                "credentials configured now.",
    "purged": "Purged {n} dead letter(s) for good.",
    "missing": "Nothing done: that call is no longer a dead letter.",
    "not_dead": "Nothing done: that call is not a dead letter (any more).",
    "unreplayable": "Not replayed: an invalid entry has no call to send; purge it instead.",
    "bad_filter": "Nothing replayed: the filter is not valid.",
}


def _notice(args: Any) -> str | None:
    template = _NOTICES.get(str(args.get("done", "")))
    if template is None:
        return None
    n = str(args.get("n", "0"))
    return template.format(n=int(n) if n.isdigit() else 0)


def _when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
