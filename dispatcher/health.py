"""Health: what operators need to know about Redis and the CAD at a glance."""

from __future__ import annotations

from typing import Any

import redis


def redis_durability_warnings(client: redis.Redis) -> list[str]:
    """Warnings when this Redis could drop calls (eviction) or forget them (no persistence)."""
    warnings = []
    policy = _config(client, "maxmemory-policy")
    if policy and policy != "noeviction":
        warnings.append(
            f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis may evict "
            "queued calls; set it to 'noeviction'"
        )
    if _config(client, "appendonly") == "no":
        warnings.append(
            "Redis appendonly is off: a Redis restart loses queued calls; turn on the "
            "append-only file (appendonly yes)"
        )
    return warnings


def _config(client: redis.Redis, name: str) -> str | None:
    try:
        value: Any = client.config_get(name)
    except redis.ResponseError:  # CONFIG may be renamed or disabled on managed Redis
        return None
    raw = value.get(name) if isinstance(value, dict) else None
    if isinstance(raw, bytes):
        raw = raw.decode()
    return raw
