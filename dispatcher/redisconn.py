"""Redis connections: short timeouts, bounded retries, our own error on failure.

This is the one place that classifies Redis errors: `UNREACHABLE` (down or slow: wait
it out), `transient` (those, and a Redis loading its data set or refusing writes while
full), `refusal` (configuration: TLS, credentials), and `bounded`, which translates
what is left after a bounded wait into our own `QueueUnavailable`.

REDIS_URL is read by redis-py (producers, web, scheduler, bridge, CLI) and by kombu
(the worker's broker), which understand different URL forms: kombu fails on
``?password=``, and takes ``rediss://`` without options as "do not verify". So the URL
is checked once at start (`check_url`: redis-py's own parser, then the query arguments
we can honour in both), and kombu gets a URL and SSL options built from what redis-py
parsed (`kombu_broker`). ``rediss://`` always verifies the server's certificate, against
DISPATCHER_REDIS_CA_FILE when it is set, else the system's trust store. A
``sentinel://`` URL (`dispatcher.sentinel`) gives clients of whichever server the
sentinels name master, in redis-py and in kombu alike.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

import redis
import tenacity

from dispatcher.errors import ConfigError, QueueUnavailable
from dispatcher.sentinel import SentinelUrl, is_sentinel

if TYPE_CHECKING:
    from dispatcher.settings import Settings

T = TypeVar("T")

def as_text(value: Any) -> str:
    """A Redis reply (bytes or not) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


#: Longest a producer waits for Redis before it raises QueueUnavailable.
QUEUE_WAIT_S = 3.0
#: Socket timeouts: Redis answers in microseconds; anything slower is an outage.
CONNECT_TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 5.0


def connect(settings: Settings, **overrides: object) -> redis.Redis:
    """A client for REDIS_URL; no connection is opened until first use."""
    options: dict[str, object] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "health_check_interval": 15,
        "retry_on_timeout": False,
    }
    options.update(tls_options(settings))
    options.update(overrides)
    if is_sentinel(settings.redis_url):
        return SentinelUrl.parse(settings.redis_url).client(
            settings.redis_sentinel_master, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


#: Query arguments of REDIS_URL that both redis-py and the worker's kombu honour.
#: Others (redis-py takes any name and fails on first use) are refused at start.
URL_QUERY_ARGS = frozenset({"db", "password", "username", "client_name", "ssl_cert_reqs",
                            "ssl_check_hostname"})


def parse_url(url: str) -> dict[str, Any]:
    """redis-py's own reading of a Redis URL; ValueError when it cannot read it."""
    if is_sentinel(url):  # db and credentials, as redis-py gives them for one server
        try:
            return SentinelUrl.parse(url).options()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    options: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    return options


def check_url(url: str, ca_file: str | None = None) -> dict[str, Any]:
    """redis-py's reading of REDIS_URL; ConfigError (one line, no secret) if unusable."""
    from urllib.parse import parse_qs, urlsplit

    if is_sentinel(url):
        return SentinelUrl.parse(url).options()
    try:
        options = parse_url(url)
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    except ValueError as exc:
        why = str(exc) if "connection URL" in str(exc) else "it cannot be parsed"
        raise ConfigError(f"REDIS_URL is not a valid Redis URL: {why}") from None
    unknown = sorted(set(query) - URL_QUERY_ARGS)
    if unknown:
        raise ConfigError(
            f"REDIS_URL: query argument {unknown[0]!r} is not supported (supported: "
            f"{', '.join(sorted(URL_QUERY_ARGS))}; timeouts are the dispatcher's own)")
    tls = url.startswith("rediss://")
    if "ssl_cert_reqs" in query and (not tls or query["ssl_cert_reqs"][0] != "required"):
        raise ConfigError("REDIS_URL: ssl_cert_reqs may only be 'required' on a rediss:// "
                          "URL (the dispatcher always verifies Redis's certificate)")
    if "ssl_check_hostname" in query and not options.get("ssl_check_hostname", True):
        raise ConfigError("REDIS_URL: ssl_check_hostname=false is not supported (the "
                          "certificate must name the host)")
    if url.startswith("unix://") and not options.get("path"):
        raise ConfigError("REDIS_URL: a unix:// URL needs the socket's path "
                          "(unix:///run/redis.sock?db=0)")
    if tls and ca_file is not None and not os.path.isfile(ca_file):
        raise ConfigError(f"DISPATCHER_REDIS_CA_FILE: no such file: {ca_file}")
    return options


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py options that make a rediss:// connection verify the server."""
    if not settings.redis_url.startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.redis_ca_file:
        options["ssl_ca_certs"] = settings.redis_ca_file
    return options


def kombu_broker(settings: Settings) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """Broker URL, ``broker_use_ssl`` and transport options for Celery, from redis-py's reading.

    Credentials go in the userinfo (kombu reads no ``?password=``; Celery's banner masks
    the userinfo password); a unix socket becomes kombu's ``redis+socket://``.
    """
    options = check_url(settings.redis_url, settings.redis_ca_file)
    if is_sentinel(settings.redis_url):
        # kombu asks the sentinels for the master each time it (re)connects.
        return (SentinelUrl.parse(settings.redis_url).kombu_url(), None,
                {"master_name": settings.redis_sentinel_master})
    user = quote(str(options.get("username") or ""), safe="")
    password = quote(str(options.get("password") or ""), safe="")
    auth = f"{user}:{password}@" if (user or password) else ""
    db = int(options.get("db") or 0)
    extra = {k: options[k] for k in ("client_name",) if options.get(k)}
    if settings.redis_url.startswith("unix://"):
        query = urlencode({"virtual_host": db})
        return f"redis+socket://{auth}{options['path']}?{query}", None, extra
    host = str(options.get("host") or "localhost")
    if ":" in host:
        host = f"[{host}]"
    scheme = "rediss" if settings.redis_url.startswith("rediss://") else "redis"
    url = f"{scheme}://{auth}{host}:{int(options.get('port') or 6379)}/{db}"
    if scheme == "redis":
        return url, None, extra
    use_ssl: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    if settings.redis_ca_file:
        use_ssl["ssl_ca_certs"] = settings.redis_ca_file
    return url, use_ssl, extra


#: Redis errors of a server that is down or slow (BusyLoadingError is one of them).
UNREACHABLE: tuple[type[redis.RedisError], ...] = (redis.ConnectionError, redis.TimeoutError)


def transient(exc: BaseException) -> bool:
    """Redis errors worth waiting out: down, slow, loading, or refusing writes while full."""
    if isinstance(exc, UNREACHABLE):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(("OOM", "LOADING"))


def bounded(
    fn: Callable[[], T],
    wait_s: float = QUEUE_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn``, retrying Redis connection errors for up to ``wait_s``; then QueueUnavailable."""
    try:
        return fn()  # the common case, without building a retry loop (producer profile)
    except UNREACHABLE:
        pass
    except redis.ResponseError as exc:
        raise QueueUnavailable(f"the queue (Redis) refused the write: {_why(exc)}") from None
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(UNREACHABLE),
        stop=tenacity.stop_after_delay(wait_s),
        wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(fn)
    except UNREACHABLE as exc:
        raise QueueUnavailable(
            f"the queue (Redis) could not be reached within {wait_s:g}s: {_why(exc)}"
        ) from None
    except redis.ResponseError as exc:
        # OOM under noeviction, READONLY replica, MISCONF on a failed save: the queue
        # refuses writes; nothing was stored.
        raise QueueUnavailable(f"the queue (Redis) refused the write: {_why(exc)}") from None


def refusal(exc: BaseException) -> str | None:
    """A one-line reason when a Redis error is configuration (TLS, credentials), else None."""
    text = str(exc)
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        return "Redis refused the credentials in REDIS_URL (user name or password)"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return ("Redis's TLS certificate could not be verified (check "
                "DISPATCHER_REDIS_CA_FILE and that the certificate names the host)")
    if isinstance(exc, ssl.SSLError) or "SSL" in text:
        return f"TLS with Redis failed: {text.splitlines()[0][:160] if text else 'SSL error'}"
    return None


def _why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
