"""Health: what /healthz and the worker start-up say about the service.

`health_report` is the /healthz body (Redis memory, workers alive, the breaker, dead
letters, the queue figures); `redis_durability_warnings` is what a worker logs at
start-up when this Redis could drop or forget calls.
"""

from __future__ import annotations

from typing import Any

import redis

from dispatcher.heartbeat import Beat

#: /healthz names Redis memory as a problem from this share of maxmemory on.
MEMORY_WARN = 0.9


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


def health_report(stats: dict[str, Any], workers: list[Beat],
                  memory: tuple[int, int] | None = None) -> dict[str, Any]:
    """The /healthz body: "ok" whenever Redis answers; what needs attention in problems."""
    alive = [w for w in workers if w.alive]
    problems = []
    if memory and memory[1] and memory[0] >= MEMORY_WARN * memory[1]:
        problems.append(f"Redis uses {memory[0] * 100 // memory[1]}% of maxmemory: when it "
                        "is full, new calls are refused (503)")
    if not alive:
        problems.append("no worker is alive (no heartbeat in the last 3 intervals)")
    if stats["circuit"] != "closed":
        problems.append(f"the CAD circuit is {stats['circuit']}: the CAD is failing")
    if stats["dead"]:
        problems.append(f"{stats['dead']} dead letter(s) wait for an operator")
    return {
        "status": "ok", "redis": True, "problems": problems,
        "circuit": stats["circuit"],
        "workers": {"alive": len(alive), "list": [w.to_json() for w in workers]},
        "queued": stats["queued"], "scheduled": stats["scheduled"],
        "in_flight": stats["in_flight"], "dead": stats["dead"],
        "delivered": stats["delivered"], "oldest_age_s": stats["oldest_age_s"],
        "rate_limit_pause_s": stats["rate_limit_pause_s"],
        "redis_memory": None if memory is None else {"used_bytes": memory[0],
                                                     "max_bytes": memory[1]},
    }
