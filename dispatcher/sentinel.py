"""Redis Sentinel: ``REDIS_URL=sentinel://[[user]:password@]h1:p1,h2:p2,h3:p3[/DB]``.

With such a URL no process is told where the master is: each asks the sentinels for
the master of DISPATCHER_REDIS_SENTINEL_MASTER, and asks again after a failover.
redis-py clients (producers, web, scheduler, bridge, CLI, the worker's own records)
come from `Sentinel.master_for`: every new connection asks the sentinels, and a
connection to a master since demoted drops itself at its first READONLY answer. The
worker's kombu gets its own form of the same URL (``sentinel://h1:p1;sentinel://h2:p2/DB``
with the transport option ``master_name``), and kombu's Sentinel transport asks the
sentinels each time Celery reconnects.

The user name and password are those of the Redis servers (master and replicas); the
sentinels themselves are reached without credentials and without TLS (not supported:
a ``sentinels://`` scheme is refused). A sentinel without a port listens on 26379.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from dispatcher.errors import ConfigError

SCHEME = "sentinel://"
#: Port of a sentinel named without one (Redis Sentinel's own default).
DEFAULT_SENTINEL_PORT = 26379
#: What a sentinel URL looks like, for the errors that refuse one.
SHAPE = "sentinel://host:port,host:port,.../DB, a ':password@' before the first host"


def is_sentinel(url: str) -> bool:
    return url.startswith(SCHEME)


@dataclass(frozen=True)
class SentinelUrl:
    """The sentinels, the database and the Redis servers' credentials of a sentinel URL."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        """Read a sentinel URL; ConfigError (one line, never the password) if it is wrong."""
        if not is_sentinel(url):
            raise _bad(f"it must start with {SCHEME}")
        rest = url[len(SCHEME):]
        if ";" in rest:
            raise _bad("name the sentinels comma-separated in one URL (kombu's "
                       "';'-separated form is built by the dispatcher itself)")
        if "?" in rest or "#" in rest:
            raise _bad("query arguments are not supported with sentinel:// (timeouts "
                       "are the dispatcher's own, the master's name is "
                       "DISPATCHER_REDIS_SENTINEL_MASTER)")
        hosts, _, path = rest.partition("/")
        userinfo, at, hosts = hosts.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            if colon:
                username, password = unquote(user) or None, unquote(secret) or None
            else:  # redis://name@host: a user name alone, as redis-py reads it
                username = unquote(user) or None
        sentinels = tuple(_address(part) for part in hosts.split(","))
        path = path.strip("/")
        if path and not path.isdigit():
            raise _bad(f"the database must be a number, got {path[:20]!r}")
        return cls(sentinels, int(path or 0), username, password)

    def client(self, master: str, **options: Any) -> redis.Redis:
        """A client of the current master of ``master``; no connection is opened here."""
        sentinel_options: dict[str, Any] = {
            k: v for k, v in options.items() if k in ("socket_connect_timeout", "socket_timeout")}
        # One try per sentinel: the next sentinel is the retry (redis-py's default of 3
        # tries with backoff made one dead sentinel cost ~3.5 s before the next was asked).
        sentinel_options["retry"] = Retry(NoBackoff(), 0)
        manager = _Sentinels(list(self.sentinels), sentinel_kwargs=sentinel_options)
        server = dict(options, db=self.db)
        if self.username:
            server["username"] = self.username
        if self.password:
            server["password"] = self.password
        client: redis.Redis = manager.master_for(master, **server)
        return client

    def kombu_url(self) -> str:
        """kombu's form: one ``sentinel://`` URL per sentinel, ';'-separated."""
        user = quote(self.username or "", safe="")
        password = quote(self.password or "", safe="")
        auth = f"{user}:{password}@" if (user or password) else ""
        return ";".join(f"sentinel://{auth}{_host(h)}:{p}/{self.db}" for h, p in self.sentinels)

    def options(self) -> dict[str, Any]:
        """What redis-py's parse_url gives for a Redis URL: db and credentials."""
        found: dict[str, Any] = {"db": self.db}
        if self.username:
            found["username"] = self.username
        if self.password:
            found["password"] = self.password
        return found


class _Sentinels(Sentinel):
    """redis-py's Sentinel, whose "no master" error is one short line (theirs holds the
    repr of every sentinel client)."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        try:
            found: tuple[str, int] = super().discover_master(service_name)
        except MasterNotFoundError:
            where = ", ".join(
                "{host}:{port}".format_map(s.connection_pool.connection_kwargs)
                for s in self.sentinels)
            raise MasterNotFoundError(
                f"no master {service_name!r} is up according to the sentinels at {where} "
                "(sentinels unreachable, another master name, or a failover in progress)"
            ) from None
        return found


def _address(part: str) -> tuple[str, int]:
    part = part.strip()
    if not part:
        raise _bad("a sentinel's address is empty (a stray comma?)")
    if part.startswith("["):  # [::1]:26379
        host, close, tail = part[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise _bad(f"cannot read the sentinel address {part[:60]!r}")
        port_text = tail[1:]
        bad = not host or any(c not in "0123456789abcdefABCDEF:." for c in host)
    else:
        host, _, port_text = part.partition(":")
        bad = not host or any(c.isspace() or c in "@[]:" for c in host)
    if bad:
        raise _bad(f"cannot read the sentinel address {part[:60]!r}")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(f"the port of sentinel {host[:40]!r} must be 1-65535, got {port_text[:10]!r}")
    return host, int(port_text)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bad(why: str) -> ConfigError:
    return ConfigError(f"REDIS_URL is not a valid sentinel URL: {why} (expected {SHAPE})")
