"""Table row "500 junk inbox entries of 60 KB grow Redis by 32 MB": DISPATCHER_MAX_INVALID.

A real bridge process on a Redis of the test's own (so INFO memory sees nothing else).
Beyond the cap the oldest invalid entries are summarised, never silently: a count in
`dispatcher stats --json`, a line in `dispatcher dlq list`, a metric and a log line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest
import redis

from dispatcher.metrics import registry_for
from tests.conftest import Proc, RedisServer, base_env, run_cli, wait_for

pytestmark = pytest.mark.integration

INBOX = "dispatcher:inbox"
MB = 1024 * 1024


def test_five_hundred_junk_entries_of_60_kb_keep_fifty_and_summarise_the_rest(
        procs: Callable[..., Proc]) -> None:
    server = RedisServer(appendonly=False).start()
    client = redis.Redis.from_url(server.url)
    try:
        env = base_env(server.url, DISPATCHER_MAX_INVALID="50")
        bridge = procs(["bridge"], env)
        wait_for(lambda: "bridge: moving" in bridge.output(), 30, message="the bridge")
        before = int(client.info("memory")["used_memory"])
        junk = [(f"{i:05d}" + "x" * 60_000).encode() for i in range(500)]
        pipe = client.pipeline(transaction=False)
        for entry in junk:
            pipe.lpush(INBOX, entry)
        pipe.execute()

        def done() -> bool:
            return (client.llen(INBOX) == 0 and client.llen(INBOX + ":processing") == 0
                    and int(client.hget("dispatcher:counters", "invalid_summarised") or 0)
                    == 450)

        wait_for(done, 120, message="450 entries summarised")
        grown = int(client.info("memory")["used_memory"]) - before
        print(f"500 entries of 60 KB, DISPATCHER_MAX_INVALID=50: Redis grew by "
              f"{grown / MB:.1f} MB")  # the figure docs/operations.md quotes (pytest -s)
        assert grown < 5 * MB, f"Redis grew by {grown / MB:.1f} MB"

        stats = json.loads(run_cli(["stats", "--json"], env).stdout)
        assert stats["invalid_summarised"] == 450 and stats["dead"] == 50
        listing = run_cli(["dlq", "list"], env)
        assert listing.returncode == 0
        assert "450 older invalid inbox entries were summarised" in listing.stdout
        assert "50 dead letter(s)" in listing.stdout
        value = registry_for(client).get_sample_value("dispatcher_invalid_summarised_total")
        assert value == 450
        # The newest kept whole, the oldest only as a hash, in order of arrival.
        hashes = [h.decode() for h in client.lrange("dispatcher:invalid:hashes", 0, -1)]
        assert hashes[-1] == hashlib.sha256(junk[0]).hexdigest()
        assert len(hashes) == 450
        raws = {client.hget(f"dispatcher:call:{i.decode()}", "raw")[:5]
                for i in client.zrange("dispatcher:dead", 0, -1)}
        assert raws == {f"{i:05d}".encode() for i in range(450, 500)}
        lines = [ln for ln in bridge.output().splitlines() if "DISPATCHER_MAX_INVALID" in ln]
        assert 1 <= len(lines) <= 2, lines  # one a minute, not one per entry
        junk_lines = [ln for ln in bridge.output().splitlines()
                      if "inbox entry is not a valid call" in ln]
        assert 1 <= len(junk_lines) <= 2, junk_lines[:5]  # not 500 lines
    finally:
        client.close()
        server.stop()
