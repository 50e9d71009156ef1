"""Communities: one deployment serving several Sonoran communities, each isolated.

Without ``DISPATCHER_COMMUNITIES`` there is one community, named ``default``, made from
the ``SONORAN_*`` variables exactly as before: nothing changes for current users. With
it, the TOML file names each community (shape in the README and ../shared/CONTRACT.md)::

    [communities.north]
    id = "community-42"
    key_env = "NORTH_KEY"      # or key = "..." (then keep the file private)
    api_version = 1            # optional; default SONORAN_API_VERSION
    api_url = "https://api.sonorancad.com"   # optional; default SONORAN_API_URL
    server_id = "1"            # optional; default SONORAN_SERVER_ID
    max_rate = 1               # optional; default DISPATCHER_MAX_RATE, else per version
    default = true             # the community of calls that name none

Each community is a `Settings` of its own (credentials, API, rate) under a key prefix of
its own, so its line, rate limiter, circuit breaker, read-back state, records and dead
letters are its own Redis keys and every script works on one community at a time. The
community named ``default`` keeps the bare prefix (``dispatcher``), so a deployment that
adds the file keeps its waiting calls; any other community ``x`` lives under
``dispatcher@x`` (``@`` never appears in our key names, so prefixes never overlap).

A file error is a `ConfigError` of one line naming the file, the community and the field;
a key never appears in it.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dispatcher.errors import ConfigError
from dispatcher.settings import (
    DEFAULT_V1_RATE,
    DEFAULT_V2_RATE,
    Secret,
    Settings,
    environ_value,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The name of the community made from the SONORAN_* variables (and of its bare prefix).
DEFAULT_NAME = "default"
#: A community's name: used in key prefixes, metric labels, the CLI and the page.
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
#: Fields a community may have in the file.
FIELDS = frozenset({"id", "key", "key_env", "api_version", "api_url", "server_id",
                    "max_rate", "default", "previous_key", "previous_key_env",
                    "previous_key_until"})


@dataclass(frozen=True)
class Community:
    """One community: its name, its own `Settings` (prefix, credentials, API, rate)."""

    name: str
    settings: Settings
    #: The key accepted besides ``settings.api_key`` during a rotation, until
    #: ``previous_key_until`` (epoch seconds; None: no previous key).
    previous_key: Secret | None = None
    previous_key_until: float | None = None

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    def accepts(self, key: Any, now: float) -> bool:
        """Whether ``key`` is this community's key (or its previous one, while valid)."""
        current = self.settings.api_key
        if current is not None and same(key, current.reveal()):
            return True
        if self.previous_key is None or self.previous_key_until is None:
            return False
        return now < self.previous_key_until and same(key, self.previous_key.reveal())


@dataclass(frozen=True)
class Communities:
    """Every community of the deployment, by name, and which one is the default."""

    by_name: Mapping[str, Community]
    #: The community of calls that name none; None with several and no ``default = true``.
    default_name: str | None
    #: Where they came from (None: the SONORAN_* variables).
    path: str | None = None

    def __iter__(self) -> Iterator[Community]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def get(self, name: str | None) -> Community:
        """The community ``name`` (None or '': the default); `ConfigError` if there is
        none such, with the names there are."""
        if not name:
            if self.default_name is None:
                raise ConfigError("this call names no community and there is no default "
                                  f"(set default = true on one of: {', '.join(self.names)})")
            return self.by_name[self.default_name]
        found = self.by_name.get(name)
        if found is None:
            raise ConfigError(f"unknown community {name!r} (known: {', '.join(self.names)})")
        return found

    def for_credentials(self, community_id: Any, key: Any, now: float) -> Community | None:
        """The community whose id is ``community_id`` and that accepts ``key``."""
        for community in self:
            if same(community_id, community.settings.community_id) \
                    and community.accepts(key, now):
                return community
        return None

    def for_key(self, key: Any, now: float) -> Community | None:
        """The community that accepts ``key`` (v2's Bearer key names no community id)."""
        for community in self:
            if community.accepts(key, now):
                return community
        return None

    def has_id(self, community_id: Any) -> bool:
        """Whether any community has this id (constant-time per community)."""
        return any(same(community_id, c.settings.community_id) for c in self)


def prefix_of(base: str, name: str) -> str:
    """The key prefix of community ``name`` (``default`` keeps the bare one)."""
    return base if name == DEFAULT_NAME else f"{base}@{name}"


class _Environ(Mapping[str, str]):
    """The variables a file's ``key_env`` names, read through dispatcher.settings."""

    def __getitem__(self, name: str) -> str:
        value = environ_value(name)
        if not value:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def load(settings: Settings, environ: Mapping[str, str] | None = None) -> Communities:
    """The deployment's communities: from ``settings.communities_file`` if set, else one
    named ``default`` from ``settings`` (the SONORAN_* variables), unchanged. Every key
    read is hidden from this process's logs from then on (`dispatcher.redact.also`)."""
    from dispatcher import redact

    if environ is None:
        environ = settings.source_env
    env: Mapping[str, str] = _Environ() if environ is None else environ
    if not settings.communities_file:
        until = _until_env(settings.previous_key_until)
        # Without an end (SONORAN_API_KEY_PREVIOUS_UNTIL) the previous key is accepted
        # until the variable is removed.
        one = Community(DEFAULT_NAME, settings, settings.previous_key,
                        (math.inf if until is None else until) if settings.previous_key else None)
        return Communities({DEFAULT_NAME: one}, DEFAULT_NAME)
    found = parse(_read(settings.communities_file), settings, env, settings.communities_file)
    redact.also(secret.reveal() for c in found
                for secret in (c.settings.api_key, c.previous_key) if secret is not None)
    return found


def _read(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"DISPATCHER_COMMUNITIES: cannot read {path}: "
                          f"{exc.strerror or type(exc).__name__}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"DISPATCHER_COMMUNITIES: {path} is not valid TOML: {exc}") from None


def parse(doc: Mapping[str, Any], base: Settings, environ: Mapping[str, str],
          path: str = "the communities file") -> Communities:
    """Communities from a parsed file; every error names the file, community and field."""
    top = set(doc) - {"communities"}
    if top:
        raise ConfigError(f"{path}: unknown table or key {sorted(top)[0]!r} "
                          "(communities go under [communities.NAME])")
    table = doc.get("communities")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{path}: no community (add a [communities.NAME] table)")
    found: dict[str, Community] = {}
    defaults: list[str] = []
    ids: dict[tuple[str, str], str] = {}
    for name, raw in table.items():
        where = f"{path}: [communities.{name}]"
        if not NAME.match(name):
            raise ConfigError(f"{where}: the name must be 1-32 of a-z, 0-9, '_' and '-', "
                              "starting with a letter or digit")
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        community = _community(name, raw, base, environ, where)
        same = ids.get((community.settings.community_id or "", community.settings.api_url))
        if same is not None and _keys_clash(found[same], community):
            raise ConfigError(f"{where}: same id, API URL and key as [communities.{same}]: "
                              "the door could not tell them apart")
        ids[(community.settings.community_id or "", community.settings.api_url)] = name
        found[name] = community
        if raw.get("default") is True:
            defaults.append(name)
    if len(defaults) > 1:
        raise ConfigError(f"{path}: default = true on more than one community "
                          f"({', '.join(defaults)})")
    default = defaults[0] if defaults else (next(iter(found)) if len(found) == 1 else None)
    return Communities(found, default, path)


def _community(name: str, raw: Mapping[str, Any], base: Settings,
               environ: Mapping[str, str], where: str) -> Community:
    unknown = set(raw) - FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r} "
                          f"(known: {', '.join(sorted(FIELDS))})")
    community_id = _text(raw, "id", where, required=True)
    key = _secret(raw, "key", environ, where, required=True)
    previous = _secret(raw, "previous_key", environ, where, required=False)
    until = raw.get("previous_key_until")
    until_s: float | None = None
    if previous is not None:
        if until is None:
            raise ConfigError(f"{where}: previous_key needs previous_key_until "
                              "(when the old key stops being accepted, e.g. 2027-01-31T00:00:00Z)")
        until_s = _until(until, f"{where}: previous_key_until")
    elif until is not None:
        raise ConfigError(f"{where}: previous_key_until without previous_key or previous_key_env")
    version = raw.get("api_version", base.api_version)
    if version not in (1, 2) or isinstance(version, bool):
        raise ConfigError(f"{where}: api_version must be 1 or 2, got {version!r}")
    api_url = _text(raw, "api_url", where) or base.api_url
    api_url = api_url.rstrip("/")
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: api_url must start with http:// or https://")
    server_id = raw.get("server_id", base.server_id)
    if isinstance(server_id, bool) or not isinstance(server_id, (str, int)) or str(server_id) == "":
        raise ConfigError(f"{where}: server_id must be a number or text, got {server_id!r}")
    max_rate = _rate(raw, base, environ, int(version), where)
    if "default" in raw and not isinstance(raw["default"], bool):
        raise ConfigError(f"{where}: default must be true or false")
    settings = base.with_(
        prefix=prefix_of(base.prefix.split("@", 1)[0], name), community=name,
        community_id=community_id, api_key=key, previous_key=previous,
        api_version=int(version), api_url=api_url, server_id=str(server_id),
        max_rate=max_rate)
    return Community(name, settings, previous, until_s)


def _text(raw: Mapping[str, Any], field: str, where: str, required: bool = False) -> str:
    value = raw.get(field)
    if value is None:
        if required:
            raise ConfigError(f"{where}: {field} is missing")
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {field} must be non-empty text")
    return value.strip()


def _secret(raw: Mapping[str, Any], field: str, environ: Mapping[str, str], where: str,
            required: bool) -> Secret | None:
    """``field`` or ``field_env`` (the name of a variable holding it); never both."""
    env_field = f"{field}_env"
    if field in raw and env_field in raw:
        raise ConfigError(f"{where}: set {field} or {env_field}, not both")
    if env_field in raw:
        variable = raw[env_field]
        if not isinstance(variable, str) or not variable.strip():
            raise ConfigError(f"{where}: {env_field} must name an environment variable")
        value = (environ.get(variable.strip()) or "").strip()
        if not value:
            raise ConfigError(f"{where}: {env_field} names {variable.strip()}, which is not set")
        return Secret(value)
    if field in raw:
        value = raw[field]
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {field} must be non-empty text")  # never the value
        return Secret(value.strip())
    if required:
        raise ConfigError(f"{where}: key or key_env is missing")
    return None


def _rate(raw: Mapping[str, Any], base: Settings, environ: Mapping[str, str], version: int,
          where: str) -> float:
    if "max_rate" in raw:
        value = raw["max_rate"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}: max_rate must be a number >= 0 (0: no limit)")
        return float(value)
    if base.max_rate_set:
        return base.max_rate
    return DEFAULT_V1_RATE if version == 1 else DEFAULT_V2_RATE


def _until(value: Any, where: str) -> float:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    raise ConfigError(f"{where} must be a date and time such as 2027-01-31T00:00:00Z")


def _until_env(raw: str | None) -> float | None:
    if raw is None or not raw.strip():
        return None
    return _until(raw.strip(), "SONORAN_API_KEY_PREVIOUS_UNTIL")


def same(given: Any, expected: str | None) -> bool:
    """Constant-time comparison of a presented credential with a configured one (a value
    that is not text, or cannot be UTF-8, never equals one)."""
    import hmac

    if not isinstance(given, str) or not expected:
        return False
    try:
        presented = given.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate cannot equal a configured value
        return False
    return hmac.compare_digest(presented, expected.encode("utf-8"))


def _keys_clash(a: Community, b: Community) -> bool:
    ka, kb = a.settings.api_key, b.settings.api_key
    return ka is not None and kb is not None and same(ka.reveal(), kb.reveal())


#: How often a process looks for a changed file or a `dispatcher reload` (seconds).
RELOAD_CHECK_S = 1.0


def reload_key(settings: Settings) -> str:
    """The Redis counter `dispatcher reload` increments (under the base prefix)."""
    return f"{settings.prefix.split('@', 1)[0]}:communities:reload"


class Live:
    """This process's communities, read again when the file changes or an operator runs
    `dispatcher reload` (a counter in Redis every process watches; not SIGHUP, which
    Celery uses and Windows lacks). A file that no longer reads keeps the communities
    in use and is logged once per change; ``generation`` counts the reloads."""

    def __init__(self, settings: Settings, client: Any = None,
                 check_every_s: float = RELOAD_CHECK_S, clock: Any = None) -> None:
        import threading
        import time

        self.settings = settings
        self.client = client
        self.check_every_s = check_every_s
        self.clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._communities = load(settings)
        self.generation = 0
        self._seen = (self._stamp(), self._asked())
        self._next = self.clock() + check_every_s

    def current(self) -> Communities:
        """The communities now (reads the file again first when it is time and it, or
        the reload counter, changed)."""
        if self.settings.communities_file and self.clock() >= self._next:
            with self._lock:
                if self.clock() >= self._next:
                    self._next = self.clock() + self.check_every_s
                    self._check()
        return self._communities

    def refresh(self) -> Communities:
        """The communities after looking at the file and the counter now (a message
        naming a community this process does not know yet: a reload it has not seen)."""
        if self.settings.communities_file:
            with self._lock:
                self._next = self.clock() + self.check_every_s
                self._check()
        return self._communities

    def _check(self) -> None:
        import logging

        seen = (self._stamp(), self._asked())
        if seen == self._seen:
            return
        self._seen = seen
        log = logging.getLogger("dispatcher.communities")
        try:
            fresh = load(self.settings)
        except ConfigError as exc:
            log.error("communities file not reloaded, the communities in use stay: %s", exc)
            return
        before, after = set(self._communities.names), set(fresh.names)
        self._communities = fresh
        self.generation += 1
        log.warning("communities reloaded from %s: %d (added: %s; removed: %s)",
                    self.settings.communities_file, len(fresh),
                    ", ".join(sorted(after - before)) or "none",
                    ", ".join(sorted(before - after)) or "none")

    def _stamp(self) -> tuple[float, int] | None:
        try:
            stat = Path(self.settings.communities_file or "").stat()
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)

    def _asked(self) -> int:
        if self.client is None:
            return 0
        try:
            return int(self.client.get(reload_key(self.settings)) or 0)
        except Exception:  # Redis away: the file's own change is still seen
            return -1
