"""Operator sessions: the login form, login (throttled per address) and logout."""

from __future__ import annotations

import logging
from typing import Any

from flask import Request, Response, redirect, render_template, request

from dispatcher.http.auth import SESSION_COOKIE, SESSION_MAX_AGE_S, safe_next, same_origin
from dispatcher.http.clientaddr import client_address
from dispatcher.http.opsstate import forbidden, html, ops

# A stable logger name operators filter on (kept from before the move into http/).
log = logging.getLogger("dispatcher.ops")


def login_form() -> Response | Any:
    """``GET /login``."""
    if not ops().auth.enabled:
        return redirect("/", 303)
    return html(render_template("ops/login.html", error=None, next=_next_path()))


def login() -> Response | Any:
    """``POST /login``: a session cookie for the right token; locked out after failures."""
    o = ops()
    auth, throttle, refusals = o.auth, o.throttle, o.refusals
    if not auth.enabled:
        return redirect("/", 303)
    if not same_origin(request):
        return html(render_template("ops/login.html", error="Refused: the form did not "
                                    "come from this page.", next="/"), 403)
    addr = client_address(request)
    verdict = throttle.check(addr)
    if verdict.allowed and not auth.token_ok(request.form.get("token", "")):
        verdict = throttle.failed(addr)
        refusals.refused(addr, "ops: failed login", logging.WARNING)
        if verdict.allowed:
            return html(render_template("ops/login.html", error="Wrong operator token.",
                                        next=_next_path()), 401)
    if not verdict.allowed:  # locked out: the token is not even compared
        wait = verdict.retry_after_s
        refusals.refused(addr, f"ops: 429 login locked out for {wait} s", logging.WARNING)
        locked = html(render_template(
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


def logout() -> Response | Any:
    """``POST /logout``: the session ends in Redis and the cookie is dropped."""
    auth = ops().auth
    if not auth.action_allowed(request):
        return forbidden()
    auth.end_session(request)
    log.info("ops: operator logged out from %s", client_address(request))
    resp = redirect("/login", 303)
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict",
                       secure=_secure(request))
    return resp


def _secure(req: Request) -> bool:
    # Behind a TLS proxy the cookie should still be Secure; a spoofed header over plain
    # HTTP only costs the spoofer their own cookie.
    return req.is_secure or req.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _next_path() -> str:
    """Where to go after login: a path on this site only (no open redirect)."""
    return safe_next(str(request.values.get("next", "/")))
