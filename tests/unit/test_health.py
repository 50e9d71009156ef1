"""dispatcher.health: the durability warnings about the Redis that holds the calls."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from dispatcher.health import redis_durability_warnings


class Configured:
    """A client whose CONFIG GET answers from a dict (bytes, as redis-py gives them),
    or is refused like on a managed Redis that renamed CONFIG."""

    def __init__(self, refused: bool = False, **config: str) -> None:
        self.config = config
        self.refused = refused

    def config_get(self, name: str) -> dict[str, Any]:
        if self.refused:
            raise redis.ResponseError("ERR unknown command 'CONFIG'")
        return {name: self.config[name].encode()} if name in self.config else {}


def warnings(**kw: Any) -> list[str]:
    return redis_durability_warnings(Configured(**kw))  # type: ignore[arg-type]


def test_a_durable_redis_gets_no_warning() -> None:
    assert warnings(**{"maxmemory-policy": "noeviction", "appendonly": "yes"}) == []


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_an_evicting_redis_is_warned_about(policy: str) -> None:
    [warning] = warnings(**{"maxmemory-policy": policy, "appendonly": "yes"})
    assert policy in warning and "'noeviction'" in warning


def test_a_redis_without_the_append_only_file_is_warned_about() -> None:
    [warning] = warnings(**{"maxmemory-policy": "noeviction", "appendonly": "no"})
    assert "appendonly yes" in warning


def test_both_warnings_at_once() -> None:
    assert len(warnings(**{"maxmemory-policy": "allkeys-lru", "appendonly": "no"})) == 2


def test_a_redis_that_hides_its_config_is_not_guessed_about() -> None:
    assert warnings(refused=True) == []
    assert warnings() == []


def test_the_real_redis_answers_too(rclient: redis.Redis) -> None:
    found = redis_durability_warnings(rclient)
    assert isinstance(found, list) and all(isinstance(w, str) for w in found)
