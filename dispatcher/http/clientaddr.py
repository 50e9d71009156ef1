"""Who is asking: the client address of a request, behind trusted proxies or not.

With ``DISPATCHER_TRUSTED_PROXIES=N`` the app is wrapped in werkzeug's ``ProxyFix``
(``x_for=N``): ``request.remote_addr`` becomes the address the N-th proxy from us saw
in ``X-Forwarded-For``, and every use of it (log lines, the audit trail, the login
throttle, the ingest rate, the loopback rule) names the real client. With 0 the header
is ignored: anybody can send it.

The loopback rule of the operations page asks more than a loopback client address: the
peer that connected (the proxy, or the client itself) must be on loopback too, so that a
forwarded address can never turn a remote client into a local one. With no proxy
trusted, a request that carries a proxy's header (``X-Forwarded-For``, ``Forwarded``,
``X-Real-IP``, ``X-Forwarded-Host``) is never local: behind a local nginx every remote
client would otherwise arrive from loopback.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from flask import Flask, Request
from werkzeug.middleware.proxy_fix import ProxyFix

#: Where ProxyFix keeps the values it replaced (werkzeug's documented environ key).
_ORIGINAL = "werkzeug.proxy_fix.orig"


def install(app: Flask, trusted_proxies: int) -> None:
    """Believe X-Forwarded-For from that many proxies (0: not at all)."""
    if trusted_proxies > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxies,  # type: ignore[method-assign]
                                x_proto=0, x_host=0, x_port=0, x_prefix=0)


def client_address(req: Request) -> str:
    """The client's address as this deployment should believe it, or "-"."""
    return req.remote_addr or "-"


def peer_address(environ: dict[str, Any]) -> str | None:
    """The address of whoever opened the TCP connection (before ProxyFix)."""
    original = environ.get(_ORIGINAL)
    if isinstance(original, dict) and original.get("REMOTE_ADDR"):
        return str(original["REMOTE_ADDR"])
    return environ.get("REMOTE_ADDR")


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


#: Headers a reverse proxy adds: a request carrying one came through a proxy.
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-Ip", "X-Forwarded-Host")


def forwarded(req: Request) -> bool:
    """Whether a proxy forwarded this request (with untrusted proxies, the client behind
    it is unknown: a local nginx makes every remote client look like loopback)."""
    return any(req.headers.get(name) for name in FORWARDING_HEADERS)


def local_request(req: Request, trusted_proxies: int = 0) -> bool:
    """Both the believed client and the connecting peer are on loopback; with no proxy
    trusted, a request a proxy forwarded is not local whatever its peer."""
    if trusted_proxies == 0 and forwarded(req):
        return False
    return is_loopback(req.remote_addr) and is_loopback(peer_address(req.environ))
