"""scripts.execute: a pipeline of scripts without SCRIPT EXISTS every time, against a real
Redis that loses its scripts (SCRIPT FLUSH, as after a restart)."""

from __future__ import annotations

import pytest
import redis

from dispatcher import scripts

pytestmark = pytest.mark.integration


def script_commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_script", {}).get("calls", 0))


def test_a_pipeline_of_known_scripts_asks_nothing_and_survives_a_flush(
    redis_url: str, rclient: redis.Redis,
) -> None:
    client = redis.Redis.from_url(redis_url)
    busy = scripts.register(client, "busy.lua")  # any script: only its loading matters
    keys = ["a", "b", "c", "d", "e"]

    def run() -> list[object]:
        pipe = client.pipeline(transaction=False)
        busy(keys=keys, args=[], client=pipe)
        busy(keys=keys, args=[], client=pipe)
        return scripts.execute(pipe)

    first = run()  # loads them the way redis-py does (SCRIPT EXISTS, then LOAD)
    before = script_commands(rclient)
    for _ in range(5):
        assert run() == first
    assert script_commands(rclient) == before  # no SCRIPT EXISTS per pipeline any more
    rclient.script_flush()
    assert run() == first  # NOSCRIPT: loaded again, sent again
    assert run() == first
    client.close()
