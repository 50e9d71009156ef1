"""Table row "one producer can bury everyone": DISPATCHER_MAX_BACKLOG caps waiting calls.

Real Redis, real `dispatcher` processes (bridge, worker, scheduler, CLI) and the CAD
simulator. Over the cap every producer gets QueueFull; nothing already accepted is
touched, the spool is never a way round it, and the bridge leaves entries in the inbox.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from dispatcher.call import Call
from dispatcher.errors import QueueFull
from dispatcher.producer import Producer, enqueue_call
from dispatcher.records import Records
from dispatcher.settings import Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, RedisServer, base_env, run_cli, wait_for

pytestmark = pytest.mark.integration

INBOX = "dispatcher:inbox"


def _waiting(client: redis.Redis) -> int:
    return int(client.zcard("dispatcher:pending"))


def test_eight_threads_cannot_put_more_than_the_cap_in_line(
        redis_url: str, rclient: redis.Redis) -> None:
    """The attack: a client with the key, 8 threads. The cap holds under the race."""
    settings = Settings.from_env(base_env(redis_url, DISPATCHER_MAX_BACKLOG="100"))
    accepted: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def flood(t: int) -> None:
        producer = Producer(settings)
        try:
            for i in range(50):
                try:
                    call_id = enqueue_call(caller=f"Flood {t}-{i}", location="Route 68",
                                           description="junk", producer=producer)
                    with lock:
                        accepted.append(call_id)
                except QueueFull as exc:
                    with lock:
                        refused.append(str(exc))
        finally:
            producer.close()

    threads = [threading.Thread(target=flood, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)

    assert len(accepted) == 100 and len(refused) == 300
    assert _waiting(rclient) == 100
    assert Records(rclient).stats()["enqueued"] == 100
    assert "DISPATCHER_MAX_BACKLOG" in refused[0] and "100" in refused[0]


def test_the_cli_prints_one_line_and_exits_non_zero_at_the_cap(
        redis_url: str, rclient: redis.Redis) -> None:
    env = base_env(redis_url, DISPATCHER_MAX_BACKLOG="3")
    ids = []
    for i in range(3):
        done = run_cli(["enqueue", "--caller", f"C{i}", "--location", "L", "--description",
                        "D", "--idempotency-key", f"k{i}"], env)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    before = {i: rclient.hgetall(f"dispatcher:call:{i}") for i in ids}

    full = run_cli(["enqueue", "--caller", "C3", "--location", "L", "--description", "D"], env)
    again = run_cli(["enqueue", "--caller", "C0", "--location", "L", "--description", "D",
                     "--idempotency-key", "k0"], env)

    assert full.returncode == 1 and full.stdout == ""
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISPATCHER_MAX_BACKLOG" in lines[0], full.stderr
    assert again.returncode == 0 and again.stdout.strip() == ids[0]  # idempotent: its id
    assert _waiting(rclient) == 3
    assert {i: rclient.hgetall(f"dispatcher:call:{i}") for i in ids} == before


def test_the_bridge_leaves_entries_in_the_inbox_at_the_cap_and_moves_them_later(
        redis_url: str, rclient: redis.Redis, sim: CadSimulator,
        procs: Callable[..., Proc]) -> None:
    env = base_env(redis_url, sim, DISPATCHER_MAX_BACKLOG="5")
    bridge = procs(["bridge"], env)
    entries = [json.dumps({"caller": f"Inbox {i}", "location": "Route 68",
                           "description": "Crash"}) for i in range(12)]
    for entry in entries:
        rclient.lpush(INBOX, entry)

    def left() -> int:
        return int(rclient.llen(INBOX)) + int(rclient.llen(INBOX + ":processing"))

    wait_for(lambda: _waiting(rclient) == 5 and left() == 7, 30, message="5 calls recorded")
    # Several refusals later (one every 2 s): still nothing lost, nothing dead, one log line.
    wait_for(lambda: "refused batch" in bridge.output(), 15, message="the bridge's log line")
    threading.Event().wait(5)
    assert _waiting(rclient) == 5 and left() == 7
    assert rclient.zcard("dispatcher:dead") == 0
    assert bridge.output().count("DISPATCHER_MAX_BACKLOG") == 1, bridge.output()

    procs(["worker"], env)
    procs(["scheduler"], env)
    wait_for(lambda: len(sim.calls()) == 12, 90, message="all 12 delivered")
    callers = sorted(c["call"]["caller"] for c in sim.calls())
    assert callers == sorted(f"Inbox {i}" for i in range(12))
    assert left() == 0 and rclient.zcard("dispatcher:dead") == 0
    wait_for(lambda: "below DISPATCHER_MAX_BACKLOG again" in bridge.output(), 10,
             message="the bridge's all-clear")


def test_the_spool_keeps_its_calls_while_the_cap_is_reached_and_takes_no_new_ones(
        sim: CadSimulator, procs: Callable[..., Proc], tmp_path: Path) -> None:
    server = RedisServer(appendonly=True, fsync="always").start()
    producer = None
    try:
        env = base_env(server.url, sim, DISPATCHER_MAX_BACKLOG="2")
        producer = Producer(Settings.from_env(env), spool_dir=tmp_path / "spool", wait_s=0.5)
        client = redis.Redis.from_url(server.url)
        first = producer.enqueue(Call.create(caller="C0", location="L", description="D"))
        server.kill()
        spooled = [producer.enqueue(Call.create(caller=f"C{i}", location="L", description="D"))
                   for i in (1, 2)]
        assert producer.pending_spooled() == 2
        server.start()

        # One spooled call fits under the cap; the other stays on disk, however long.
        wait_for(lambda: producer.pending_spooled() == 1, 20, message="one call flushed")
        threading.Event().wait(3)
        assert producer.pending_spooled() == 1 and _waiting(client) == 2
        with pytest.raises(QueueFull):  # neither recorded nor spooled behind the others
            producer.enqueue(Call.create(caller="C3", location="L", description="D"))
        assert producer.pending_spooled() == 1

        procs(["worker"], env)
        procs(["scheduler"], env)
        wait_for(lambda: producer.pending_spooled() == 0, 60, message="the spool to empty")
        wait_for(lambda: len(sim.calls()) == 3, 60, message="3 deliveries")
        assert sorted(c["call"]["caller"] for c in sim.calls()) == ["C0", "C1", "C2"]
        assert Records(client).get(first) is not None
        assert all(Records(client).get(i) is not None for i in spooled)
        client.close()
    finally:
        if producer is not None:
            producer.close()
        server.stop()
