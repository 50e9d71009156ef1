"""Who may use the operations page: the operator token, sessions, and the checks.

- With ``DISPATCHER_OPS_TOKEN`` set, ``/login`` compares the token in constant time and
  sets a signed, HttpOnly, SameSite=Strict cookie holding a random session id and CSRF
  token (the signing key is derived from the operator token, so changing the token ends
  every session). The session also lives in Redis (``{p}:ops:session:{sid}``, TTL
  `SESSION_MAX_AGE_S`): logout deletes it, so an old cookie is worth nothing after it.
- Failed logins are throttled per client address (`dispatcher.http.throttle.LoginThrottle`).
- Without the token the page is read-only and answers loopback clients only
  (`dispatcher.http.clientaddr.local_request`): anyone else gets 403 and `LOOPBACK_HINT`.
- ``next`` after login is a path on this site or ``/`` (`safe_next`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from urllib.parse import urlsplit

import redis
from flask import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from dispatcher.settings import Secret

#: Name of the operator's session cookie.
SESSION_COOKIE = "dispatcher_ops"
#: A session lasts a working shift; then the operator logs in again.
SESSION_MAX_AGE_S = 12 * 3600
#: The one-line answer to a remote client while the page has no operator token.
LOOPBACK_HINT = ("403 the operations page answers loopback clients only while "
                 "DISPATCHER_OPS_TOKEN is not set: set DISPATCHER_OPS_TOKEN on the web "
                 "process (16 characters at least) to reach it from elsewhere")


class OperatorAuth:
    """The operator credential, the session (cookie and Redis) and the CSRF check."""

    def __init__(self, token: Secret | None, client: redis.Redis | None = None,
                 prefix: str = "dispatcher") -> None:
        self._digest = hashlib.sha256(token.reveal().encode()).digest() if token else None
        key = hmac.new(self._digest or b"", b"dispatcher-ops-session-v1", "sha256").digest()
        self._signer = URLSafeTimedSerializer(key, salt="dispatcher.ops.session")
        #: Where sessions live; None only in unit tests of the signature alone.
        self.client = client
        self.prefix = prefix

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def token_ok(self, given: str) -> bool:
        """Constant time, and over digests so the length does not leak either."""
        if self._digest is None:
            return False
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._digest)

    def _key(self, sid: str) -> str:
        return f"{self.prefix}:ops:session:{sid}"

    def new_session(self) -> str:
        """A new session: recorded in Redis, returned as the signed cookie value."""
        sid = secrets.token_urlsafe(18)
        if self.client is not None:
            self.client.set(self._key(sid), "1", ex=SESSION_MAX_AGE_S)
        return self._signer.dumps({"sid": sid, "csrf": secrets.token_urlsafe(32)})

    def _session(self, req: Request) -> dict[str, str] | None:
        if not self.enabled:
            return None
        cookie = req.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        sid, csrf = data.get("sid"), data.get("csrf")
        if not isinstance(sid, str) or not isinstance(csrf, str):
            return None
        if self.client is not None and not self.client.exists(self._key(sid)):
            return None  # logged out (or expired)
        return {"sid": sid, "csrf": csrf}

    def csrf_of(self, req: Request) -> str | None:
        """The CSRF token of the request's live session, or None (no, bad or ended)."""
        session = self._session(req)
        return session["csrf"] if session else None

    def end_session(self, req: Request) -> None:
        """Logout: the session is deleted in Redis; its cookie no longer opens anything."""
        session = self._session(req)
        if session is not None and self.client is not None:
            self.client.delete(self._key(session["sid"]))

    def action_allowed(self, req: Request) -> bool:
        """A state-changing request: a session, its CSRF token, and our own origin."""
        csrf = self.csrf_of(req)
        given = req.form.get("csrf", "")
        if csrf is None or not hmac.compare_digest(given.encode(), csrf.encode()):
            return False
        return same_origin(req)


def same_origin(req: Request) -> bool:
    """Origin (or Referer when a browser sent no Origin) names the host this request hit."""
    source = req.headers.get("Origin")
    if source is None:
        source = req.headers.get("Referer")
    if not source or source == "null":
        return False
    return urlsplit(source).netloc.lower() == req.host.lower()


def safe_next(target: str) -> str:
    """Where to go after login: a path on this site, else ``/``.

    Browsers drop tabs and newlines inside a URL and read ``\\`` as ``/``, so
    ``/<TAB>/evil.example`` or ``/\\evil.example`` would leave the site: any control,
    format or space character, any backslash, a scheme, a host or ``//`` sends to ``/``.
    """
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ch.isspace() or unicodedata.category(ch)[0] in "CZ" for ch in target):
        return "/"
    try:
        parts = urlsplit(target)
    except ValueError:
        return "/"
    if parts.scheme or parts.netloc:
        return "/"
    return target
