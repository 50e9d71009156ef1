"""Operations: the page at ``/`` and its dead-letter actions, and `ops_blueprint`, which
also mounts ``/login``/``/logout`` (`login`), ``/metrics`` and ``/healthz`` (`probes`).

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
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

import redis
from flask import Blueprint, Response, redirect, render_template, request

from dispatcher import clock as shared_clock
from dispatcher.communities import Live
from dispatcher.deadletters import DeadLetters, Filter
from dispatcher.history import chart
from dispatcher.http import login, probes
from dispatcher.http.auth import LOOPBACK_HINT, SESSION_COOKIE, OperatorAuth, same_origin
from dispatcher.http.clientaddr import client_address, local_request
from dispatcher.http.opsstate import EXTENSION, Ops, forbidden, html, ops
from dispatcher.metrics import KNOWN_REASONS, redis_memory
from dispatcher.records import CallRecord
from dispatcher.settings import Settings
from dispatcher.since import parse_since
from dispatcher.takeback import resolve

# A stable logger name operators filter on (kept from before the move into http/).
log = logging.getLogger("dispatcher.ops")

__all__ = ["SESSION_COOKIE", "OperatorAuth", "View", "ops_blueprint", "same_origin"]

#: Dead letters listed on the page (the count of all matching ones is shown too).
PAGE_LIMIT = 100
#: Query parameters the page keeps across an action (filters and the looked-up call).
VIEW_PARAMS = ("reason", "since", "search", "call", "refresh", "community")

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


def ops_blueprint(settings: Settings, client: redis.Redis, live: Live | None = None
                  ) -> Blueprint:
    """Routes for operators, reading state from Redis on each request (and the
    communities again after a reload, with ``live``)."""
    state = Ops.build(settings, client, live)
    bp = Blueprint("ops", __name__, static_folder="static", static_url_path="/ops/static")
    bp.record_once(lambda setup: setup.app.extensions.__setitem__(EXTENSION, state))
    bp.before_request(loopback_only)
    # Ages and heartbeats are read against Redis's clock: keep it measured.
    bp.before_request(lambda: shared_clock.sync_if_due(client))
    bp.register_error_handler(redis.RedisError, redis_down)
    bp.after_request(security_headers)
    bp.add_url_rule("/metrics", view_func=probes.metrics, methods=["GET"])
    bp.add_url_rule("/healthz", view_func=probes.healthz, methods=["GET"])
    bp.add_url_rule("/login", view_func=login.login_form, methods=["GET"])
    bp.add_url_rule("/login", view_func=login.login, methods=["POST"])
    bp.add_url_rule("/logout", view_func=login.logout, methods=["POST"])
    bp.add_url_rule("/", view_func=page, methods=["GET"])
    bp.add_url_rule("/dead-letters/<call_id>/replay", view_func=replay_one, methods=["POST"])
    bp.add_url_rule("/dead-letters/<call_id>/purge", view_func=purge_one, methods=["POST"])
    bp.add_url_rule("/dead-letters/replay", view_func=replay_matching, methods=["POST"])
    return bp


# -- around every operator route -----------------------------------------------------------

def loopback_only() -> Response | None:
    """Without an operator token the page is for this machine's own users only."""
    if ops().auth.enabled or request.endpoint in ("ops.metrics", "ops.healthz"):
        return None
    if local_request(request, ops().settings.trusted_proxies):
        return None
    ops().refusals.refused(client_address(request), f"ops: 403 {request.path} (no operator "
                           "token: loopback clients only)", logging.WARNING)
    return Response(LOOPBACK_HINT + "\n", status=403, mimetype="text/plain")


def redis_down(exc: redis.RedisError) -> Response:
    return html(render_template("ops/down.html", error=type(exc).__name__), 503)


def security_headers(resp: Response) -> Response:
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    if resp.mimetype == "text/html":
        resp.headers["Content-Security-Policy"] = _CSP
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Cache-Control"] = "no-store"
    return resp


# -- the page and its dead-letter actions --------------------------------------------------

def page() -> Response | Any:
    """``GET /``: the figures, the last hour, the dead letters (filtered), a lookup."""
    o = ops()
    csrf = o.auth.csrf_of(request)
    if o.auth.enabled and csrf is None:
        return redirect("/login?" + urlencode({"next": request.full_path}), 303)
    now = shared_clock.now()
    view = View.from_args(request.args, now)
    # A RedisError here is answered by the blueprint's `redis_down` (the "down" page, 503).
    stats = o.records.stats()
    workers = o.beats.all()
    letters, total = _matching(o.dead, view)
    lookup_id = str(request.args.get("call", "")).strip()
    lookup = o.records.get(lookup_id) if lookup_id else None
    graph = chart(o.history.points(), now)
    memory = redis_memory(o.client)
    reasons = sorted(set(KNOWN_REASONS) | set(stats["dead_by_reason"]))
    query = _query_builder(request.args)
    return html(render_template(
        "ops/page.html", stats=stats, workers=workers,
        alive=sum(1 for w in workers if w.alive), letters=letters, total=total,
        view=view, reasons=reasons, lookup_id=lookup_id, lookup=lookup,
        lookup_json=lookup.to_json(o.settings.server_id) if lookup else None,
        chart=graph, csrf=csrf, writable=o.auth.enabled, limit=PAGE_LIMIT,
        back=query()[2:], query=query, notice=_notice(request.args),
        refresh=request.args.get("refresh") == "on", when=_when, now=now,
        communities=list(o.others), community=o.settings.community,
        memory_pct=memory[0] * 100 // memory[1] if memory and memory[1] else None))


def _named(given: str) -> str:
    """Our id of the call named ``given`` (our id, its ticket or the CAD's id); ``given``
    itself when none is found (the action then says the dead letter is missing)."""
    o = ops()
    return resolve(o.dead.client, o.dead.keys, given) or given


def replay_one(call_id: str) -> Response | Any:
    """``POST /dead-letters/<id>/replay``."""
    o = ops()
    if not o.auth.action_allowed(request):
        return forbidden()
    outcome = o.dead.replay(_named(call_id), actor=_actor())
    if outcome == "replayed":
        o.kick.tick()
        return _back(done="replayed", n=1)
    return _back(done=outcome, n=0)


def purge_one(call_id: str) -> Response | Any:
    """``POST /dead-letters/<id>/purge``."""
    o = ops()
    if not o.auth.action_allowed(request):
        return forbidden()
    done = o.dead.purge(_named(call_id), actor=_actor())
    return _back(done="purged" if done else "missing", n=1 if done else 0)


def replay_matching() -> Response | Any:
    """``POST /dead-letters/replay``: every dead letter the form's filter matches."""
    o = ops()
    if not o.auth.action_allowed(request):
        return forbidden()
    view = View.from_args(request.form, shared_clock.now())
    if view.error:
        return _back(done="bad_filter", n=0)
    actor = _actor()
    ids = [r.id for r in o.dead.iter(view.flt)]
    replayed = sum(1 for i in ids if o.dead.replay(i, actor=actor) == "replayed")
    if replayed:
        o.kick.tick()
    log.info("ops: %s replayed %d dead letter(s) matching %s", actor, replayed, view.flt)
    return _back(done="replayed", n=replayed)


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


def _actor() -> str:
    return f"web:{client_address(request)}"


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
