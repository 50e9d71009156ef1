"""The configuration: one `Settings` object built once from the environment.

This is the only module that reads ``os.environ``. Every other module receives a
`Settings` (or the few values it needs) from its caller. Each default below is the
documented default of the project's contract (README, Deploy) or, for tuning knobs the contract
does not name, a value chosen for a small community and explained where it is defined.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dispatcher.errors import ConfigError

#: Broker and all state live here.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: Production CAD; v1 posts to ``{base}/emergency/call_911``.
DEFAULT_API_URL = "https://api.sonorancad.com"
#: ``serverId`` of calls that do not carry their own (the official resource's default).
DEFAULT_SERVER_ID = "1"
#: The docs ask v1 clients to stay near one request per second.
DEFAULT_V1_RATE = 1.0
#: v2 allows 10 requests per minute per key for creating a 911 call.
DEFAULT_V2_RATE = 10 / 60
DEFAULT_INBOX_KEY = "dispatcher:inbox"
DEFAULT_PORT = 8000
#: Connect timeout: a little over a TCP retransmit window (3 s), as requests suggests.
DEFAULT_CONNECT_TIMEOUT_S = 3.05
#: Read timeout per socket read, and also the cap on reading a whole answer.
DEFAULT_READ_TIMEOUT_S = 10.0
#: Kombu redelivers an unacked message after this long. Our own leases recover calls
#: far sooner; this only needs to exceed the longest task (a few seconds).
DEFAULT_VISIBILITY_TIMEOUT_S = 3600.0
#: Pause of an open circuit breaker before one probe. The probe is a waiting call that
#: has to go anyway, so a steady cadence costs the CAD no more than a patient sender, and
#: a CAD that answers again gets the first held call within about this long, whatever
#: the outage's length (tests/chaos/test_recovery_chaos.py).
DEFAULT_CIRCUIT_COOLDOWN_S = 2.0
#: Longest pause between probes: a failed probe doubles the pause up to this. The
#: default keeps the cadence steady; raise it to back off from a long outage.
DEFAULT_CIRCUIT_MAX_COOLDOWN_S = 2.0
#: A call whose message has been out this long without being claimed is assumed lost
#: (a publish that failed after the record, a worker killed holding a prefetched
#: message) and is given a new one; a stale generation makes that harmless.
DEFAULT_ORPHAN_AFTER_S = 60.0
#: Threads per worker process: the work is waiting on the CAD, not CPU. 32 is the
#: smallest count that drained more than 150 calls/s from a CAD answering in 100 ms on
#: 2 cores (bench/drain.py; docs/PERFORMANCE.md); with the default rate limit it idles.
DEFAULT_CONCURRENCY = 32
#: Most calls not yet delivered or dead (held, queued, scheduled, in flight: the
#: ``pending`` index); beyond it producers get QueueFull and the HTTP door 503. Sized so
#: that a burst never costs Redis more than about 40-75 MB (0.8-1.5 KB per waiting call,
#: docs/ARCHITECTURE.md), far above any community's honest backlog.
DEFAULT_MAX_BACKLOG = 50_000
#: Most invalid inbox entries kept as dead letters; older ones beyond it are summarised
#: (counted, their hashes kept) instead of being kept whole.
DEFAULT_MAX_INVALID = 1_000
#: Address of `dispatcher web` (a container or a Procfile host must be reachable).
DEFAULT_WEB_HOST = "0.0.0.0"
#: Address of the web door under `dispatcher run` (a small community's single machine).
DEFAULT_RUN_WEB_HOST = "127.0.0.1"
#: Shortest operator token accepted: shorter ones are guessable online.
MIN_OPS_TOKEN_CHARS = 16
#: Master name the sentinels know when REDIS_URL is sentinel:// (Redis's own example name).
DEFAULT_SENTINEL_MASTER = "mymaster"
#: Replicas an acknowledged write waits for (Redis WAIT); 0: none, replication is
#: asynchronous (docs/redis-ha.md says what a failover can then lose).
DEFAULT_REDIS_WAIT = 0
#: Most replicas DISPATCHER_REDIS_WAIT may name (more is a typo, not a deployment).
MAX_REDIS_WAIT = 16


class Secret:
    """A string that never prints itself (repr, str and format all hide it)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once from the environment."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)  # may hold a password
    api_url: str = DEFAULT_API_URL
    community_id: str | None = None
    api_key: Secret | None = field(default=None, repr=False)
    server_id: str = DEFAULT_SERVER_ID
    api_version: int = 1
    max_rate: float = DEFAULT_V1_RATE
    max_age_s: float | None = None
    inbox_key: str = DEFAULT_INBOX_KEY
    port: int = DEFAULT_PORT
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S
    concurrency: int = DEFAULT_CONCURRENCY
    circuit_cooldown_s: float = DEFAULT_CIRCUIT_COOLDOWN_S
    circuit_max_cooldown_s: float = DEFAULT_CIRCUIT_MAX_COOLDOWN_S
    orphan_after_s: float = DEFAULT_ORPHAN_AFTER_S
    #: Folder of the producer's local spool for Redis outages (unset: off).
    spool_dir: str | None = None
    #: Address the web process listens on (DISPATCHER_WEB_HOST); None: the process's own
    #: default (`DEFAULT_WEB_HOST` for `dispatcher web`, `DEFAULT_RUN_WEB_HOST` for `run`).
    web_host: str | None = None
    #: Processes of the web door (WEB_CONCURRENCY, the Heroku/gunicorn convention).
    web_processes: int = 1
    #: Key prefix of every Redis key we own (Celery's own keys are separate).
    prefix: str = "dispatcher"
    #: Celery queue (a Redis list) that carries call messages.
    queue_name: str = "dispatcher"
    #: Operator credential of the operations page (DISPATCHER_OPS_TOKEN); unset means the
    #: page is read-only. A secret like the API key: never printed.
    ops_token: Secret | None = field(default=None, repr=False)
    #: How many reverse proxies in front of the web door to believe in X-Forwarded-For
    #: (DISPATCHER_TRUSTED_PROXIES); 0: the header is ignored, the peer address counts.
    trusted_proxies: int = 0
    #: Most ingest requests per second from one source address (DISPATCHER_INGEST_RATE);
    #: None: no limit.
    ingest_rate: float | None = None
    #: Most calls waiting for delivery (DISPATCHER_MAX_BACKLOG); 0: no cap.
    max_backlog: int = DEFAULT_MAX_BACKLOG
    #: Most invalid inbox entries kept whole (DISPATCHER_MAX_INVALID).
    max_invalid: int = DEFAULT_MAX_INVALID
    #: Webhook told about dead letters and the breaker (DISPATCHER_NOTIFY_URL): a
    #: credential, never printed.
    notify_url: Secret | None = field(default=None, repr=False)
    #: CA file that verifies a rediss:// server (DISPATCHER_REDIS_CA_FILE); None: the
    #: system's trust store.
    redis_ca_file: str | None = None
    #: The TOML file naming several communities (DISPATCHER_COMMUNITIES); None: one
    #: community, ``default``, from the SONORAN_* variables (dispatcher.communities).
    communities_file: str | None = None
    #: The community these settings serve (its name; dispatcher.communities).
    community: str = "default"
    #: The key accepted besides ``api_key`` during a rotation (SONORAN_API_KEY_PREVIOUS).
    previous_key: Secret | None = field(default=None, repr=False)
    #: Until when (SONORAN_API_KEY_PREVIOUS_UNTIL, ISO 8601); None: while it is set.
    previous_key_until: str | None = None
    #: DISPATCHER_MAX_RATE was set (a community of the file without max_rate takes it).
    max_rate_set: bool = False
    #: The mapping given to `from_env` in place of the process's environment (tests, the
    #: runner): a communities file's ``key_env`` is read from it. None: os.environ.
    source_env: Mapping[str, str] | None = field(default=None, repr=False, compare=False)
    #: Master name asked of the sentinels (DISPATCHER_REDIS_SENTINEL_MASTER); used only
    #: when REDIS_URL is sentinel://.
    redis_sentinel_master: str = DEFAULT_SENTINEL_MASTER
    #: Replicas every acknowledged write waits for (DISPATCHER_REDIS_WAIT;
    #: `dispatcher.replicas`).
    redis_wait: int = DEFAULT_REDIS_WAIT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); bad values raise ConfigError."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None or value.strip() == "":
                return None
            return value.strip()

        version_raw = get("SONORAN_API_VERSION") or "1"
        if version_raw not in ("1", "2"):
            raise ConfigError(f"SONORAN_API_VERSION must be 1 or 2, got {version_raw!r}")
        version = int(version_raw)
        default_rate = DEFAULT_V1_RATE if version == 1 else DEFAULT_V2_RATE
        max_rate = _number(get("DISPATCHER_MAX_RATE"), "DISPATCHER_MAX_RATE", default_rate)
        if max_rate < 0 or not math.isfinite(max_rate):
            raise ConfigError(
                "DISPATCHER_MAX_RATE must be a finite number >= 0 (0 means no limit)"
            )
        max_age = get("DISPATCHER_MAX_AGE_S")
        max_age_s = None if max_age is None else _number(max_age, "DISPATCHER_MAX_AGE_S", 0)
        if max_age_s is not None and max_age_s <= 0:
            raise ConfigError("DISPATCHER_MAX_AGE_S must be a number of seconds > 0")
        api_url = (get("SONORAN_API_URL") or DEFAULT_API_URL).rstrip("/")
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"SONORAN_API_URL must start with http:// or https://, got {api_url!r}"
            )
        redis_url = get("REDIS_URL") or DEFAULT_REDIS_URL
        if not redis_url.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss://, unix:// or "
                              "sentinel://")
        from dispatcher.redisconn import check_url

        check_url(redis_url, get("DISPATCHER_REDIS_CA_FILE"))
        master = get("DISPATCHER_REDIS_SENTINEL_MASTER") or DEFAULT_SENTINEL_MASTER
        if any(c.isspace() for c in master) or len(master) > 200:
            raise ConfigError("DISPATCHER_REDIS_SENTINEL_MASTER must be a master name as "
                              "the sentinels know it (no spaces)")
        redis_wait = _integer(get("DISPATCHER_REDIS_WAIT"), "DISPATCHER_REDIS_WAIT",
                              DEFAULT_REDIS_WAIT)
        if not 0 <= redis_wait <= MAX_REDIS_WAIT:
            raise ConfigError(f"DISPATCHER_REDIS_WAIT must be a number of replicas from 0 "
                              f"to {MAX_REDIS_WAIT}, got {redis_wait}")
        key = get("SONORAN_API_KEY")
        port = _integer(get("PORT"), "PORT", DEFAULT_PORT)
        if not 0 < port < 65536:
            raise ConfigError(f"PORT must be between 1 and 65535, got {port}")
        concurrency = _integer(
            get("DISPATCHER_CONCURRENCY"), "DISPATCHER_CONCURRENCY", DEFAULT_CONCURRENCY
        )
        if concurrency < 1:
            raise ConfigError("DISPATCHER_CONCURRENCY must be at least 1")
        web_processes = _integer(get("WEB_CONCURRENCY"), "WEB_CONCURRENCY", 1)
        if not 1 <= web_processes <= 64:
            raise ConfigError("WEB_CONCURRENCY must be between 1 and 64")
        ops = get("DISPATCHER_OPS_TOKEN")
        if ops is not None and len(ops) < MIN_OPS_TOKEN_CHARS:
            raise ConfigError(f"DISPATCHER_OPS_TOKEN must be at least {MIN_OPS_TOKEN_CHARS} "
                              f"characters (it has {len(ops)}): use a long random value")
        proxies = _integer(get("DISPATCHER_TRUSTED_PROXIES"), "DISPATCHER_TRUSTED_PROXIES", 0)
        if not 0 <= proxies <= 10:
            raise ConfigError("DISPATCHER_TRUSTED_PROXIES must be between 0 and 10")
        ingest = get("DISPATCHER_INGEST_RATE")
        ingest_rate = None if ingest is None else _number(ingest, "DISPATCHER_INGEST_RATE", 0)
        if ingest_rate is not None and ingest_rate <= 0:
            raise ConfigError("DISPATCHER_INGEST_RATE must be a number of requests per "
                              "second > 0 (unset: no limit)")
        max_backlog = _integer(get("DISPATCHER_MAX_BACKLOG"), "DISPATCHER_MAX_BACKLOG",
                               DEFAULT_MAX_BACKLOG)
        if max_backlog < 0:
            raise ConfigError("DISPATCHER_MAX_BACKLOG must be a whole number >= 0 (0: no cap)")
        max_invalid = _integer(get("DISPATCHER_MAX_INVALID"), "DISPATCHER_MAX_INVALID",
                               DEFAULT_MAX_INVALID)
        if max_invalid < 1:
            raise ConfigError("DISPATCHER_MAX_INVALID must be a whole number >= 1")
        previous = get("SONORAN_API_KEY_PREVIOUS")
        notify = get("DISPATCHER_NOTIFY_URL")
        if notify is not None and not notify.startswith(("http://", "https://")):
            raise ConfigError("DISPATCHER_NOTIFY_URL must start with http:// or https://")
        return cls(
            redis_url=redis_url,
            api_url=api_url,
            community_id=get("SONORAN_COMMUNITY_ID"),
            api_key=Secret(key) if key else None,
            server_id=get("SONORAN_SERVER_ID") or DEFAULT_SERVER_ID,
            api_version=version,
            max_rate=max_rate,
            max_age_s=max_age_s,
            inbox_key=get("DISPATCHER_INBOX_KEY") or DEFAULT_INBOX_KEY,
            port=port,
            visibility_timeout_s=_positive(
                get, "DISPATCHER_VISIBILITY_TIMEOUT_S", DEFAULT_VISIBILITY_TIMEOUT_S
            ),
            concurrency=concurrency,
            read_timeout_s=_positive(get, "DISPATCHER_READ_TIMEOUT_S", DEFAULT_READ_TIMEOUT_S),
            circuit_cooldown_s=_positive(
                get, "DISPATCHER_CIRCUIT_COOLDOWN_S", DEFAULT_CIRCUIT_COOLDOWN_S),
            circuit_max_cooldown_s=_positive(
                get, "DISPATCHER_CIRCUIT_MAX_COOLDOWN_S", DEFAULT_CIRCUIT_MAX_COOLDOWN_S),
            orphan_after_s=_positive(get, "DISPATCHER_ORPHAN_AFTER_S", DEFAULT_ORPHAN_AFTER_S),
            ops_token=Secret(ops) if ops else None,
            spool_dir=get("DISPATCHER_SPOOL_DIR"),
            web_host=get("DISPATCHER_WEB_HOST"),
            web_processes=web_processes,
            trusted_proxies=proxies,
            ingest_rate=ingest_rate,
            max_backlog=max_backlog,
            max_invalid=max_invalid,
            notify_url=Secret(notify) if notify else None,
            redis_ca_file=get("DISPATCHER_REDIS_CA_FILE"),
            communities_file=get("DISPATCHER_COMMUNITIES"),
            previous_key=Secret(previous) if previous else None,
            previous_key_until=get("SONORAN_API_KEY_PREVIOUS_UNTIL"),
            max_rate_set=get("DISPATCHER_MAX_RATE") is not None,
            source_env=None if environ is None else _Hidden(environ),
            redis_sentinel_master=master,
            redis_wait=redis_wait,
        )

    def require_credentials(self) -> None:
        """Raise ConfigError naming the first missing credential (workers need both; with
        a communities file, each community's are checked when it is read)."""
        if self.communities_file:
            from dispatcher.communities import load

            load(self)
            return
        if not self.community_id:
            raise ConfigError(
                "SONORAN_COMMUNITY_ID is not set: the worker needs the community id "
                "(or DISPATCHER_COMMUNITIES, a file of several communities)"
            )
        if not self.api_key:
            raise ConfigError(
                "SONORAN_API_KEY is not set: the worker needs the community's API key "
                "(or DISPATCHER_COMMUNITIES, a file of several communities)"
            )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and the runner use it)."""
        return replace(self, **changes)

    @property
    def request_deadline_s(self) -> float:
        """Longest one CAD request can take before we give up on it."""
        return self.connect_timeout_s + self.read_timeout_s

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for output: the key shows only whether it is set."""
        return {
            "redis_url": _hide_password(self.redis_url),
            "api_url": self.api_url,
            "community_id": self.community_id,
            "api_key": "set" if self.api_key else "not set",
            "server_id": self.server_id,
            "api_version": self.api_version,
            "max_rate": self.max_rate,
            "max_age_s": self.max_age_s,
            "inbox_key": self.inbox_key,
            "port": self.port,
        }


class _Hidden(dict[str, str]):
    """A copy of the environment given to `Settings.from_env` that never prints itself
    (it holds the keys)."""

    def __repr__(self) -> str:
        return "{***}"

    __str__ = __repr__

    def __deepcopy__(self, memo: dict[int, Any]) -> _Hidden:
        return _Hidden(self)


def environ_value(name: str) -> str:
    """One environment variable, stripped ('' when unset): for a communities file's
    ``key_env`` (dispatcher.communities), which names variables read when it is loaded."""
    return (os.environ.get(name) or "").strip()


def _number(raw: str | None, name: str, default: float) -> float:
    if raw is None:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def _integer(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _positive(get: Any, name: str, default: float) -> float:
    value = _number(get(name), name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0")
    return value


def _hide_password(url: str) -> str:
    """redis://:secret@host -> redis://:***@host, ?password=secret -> ?password=***."""
    from dispatcher.redact import redact_url

    return redact_url(url)
