"""DISPATCHER_REDIS_WAIT against real Redis servers: a master alone, and one with a replica.

An acknowledged write must be on the replicas: with none confirming, the producer gets
QueueUnavailable, the door 503, and a worker sends nothing (its claim is given back).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from dispatcher.call import Call
from dispatcher.errors import QueueUnavailable
from dispatcher.lifecycle import Lifecycle
from dispatcher.producer import Producer
from dispatcher.replicas import WAIT_TIMEOUT_MS
from dispatcher.settings import Settings
from tests.conftest import API_KEY, COMMUNITY, RedisServer, wait_for
from tests.http.httpkit import seed_body, seed_call

pytestmark = pytest.mark.integration


@pytest.fixture
def alone() -> Iterator[RedisServer]:
    """A master without replicas."""
    server = RedisServer(appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and its replica, in sync."""
    master = RedisServer(appendonly=False)
    master.args += ["--repl-diskless-sync-delay", "0"]  # sync the replica at once
    master.start()
    replica = RedisServer(appendonly=False)
    replica.args += ["--replicaof", "127.0.0.1", str(master.port)]
    replica.start()
    client = redis.Redis(port=master.port)
    wait_for(lambda: client.info("replication").get("connected_slaves") == 1
             and client.info("replication").get("slave0", {}).get("state") == "online",
             10, 0.05, "the replica to sync")
    yield master, replica
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGCONT)
    replica.stop()
    master.stop()


def settings(server: RedisServer, wait: int = 1, **extra: str) -> Settings:
    return Settings.from_env({"REDIS_URL": server.url, "DISPATCHER_REDIS_WAIT": str(wait),
                              "SONORAN_COMMUNITY_ID": COMMUNITY, "SONORAN_API_KEY": API_KEY,
                              "DISPATCHER_MAX_RATE": "0", **extra})


def call(i: int, key: str | None = None) -> Call:
    return Call.create(caller=f"Caller {i}", location="Route 68", description=f"call {i}",
                       idempotency_key=key)


def test_no_replica_confirms_so_the_producer_is_told_queue_unavailable(
        alone: RedisServer) -> None:
    producer = Producer(settings(alone))
    try:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable, match=r"confirm the write on 1 replica\(s\) "
                                                   r"within 1000 ms \(0 confirmed"):
            producer.enqueue(call(1, key="k-1"))
        took = time.monotonic() - started
        assert WAIT_TIMEOUT_MS / 1000 <= took < WAIT_TIMEOUT_MS / 1000 + 1.0
        # Honest: the master has the call; a retry with the same key finds it, and is
        # refused for the same reason until a replica confirms.
        client = redis.Redis(port=alone.port)
        assert client.zcard("dispatcher:pending") == 1
        with pytest.raises(QueueUnavailable):
            producer.enqueue(call(1, key="k-1"))
        assert client.zcard("dispatcher:pending") == 1
        # A batch (the inbox bridge's way) is refused the same way.
        with pytest.raises(QueueUnavailable, match="0 confirmed"):
            producer.enqueue_many([call(2), call(3)], "inbox")
    finally:
        producer.close()


def test_without_wait_the_same_master_acknowledges(alone: RedisServer) -> None:
    producer = Producer(settings(alone, wait=0))
    try:
        assert producer.enqueue(call(1))
    finally:
        producer.close()


def test_the_door_answers_503_when_no_replica_confirms(alone: RedisServer) -> None:
    from dispatcher.http.app import create_app

    app = create_app(settings(alone))
    answer = app.test_client().post("/emergency/call_911", data=seed_body([seed_call(1)]))

    assert answer.status_code == 503
    assert "Retry-After" in answer.headers
    text = answer.get_data(as_text=True)
    assert text.startswith("QUEUE UNAVAILABLE") and "replica" in text


def test_with_a_replica_writes_are_acknowledged_and_a_stalled_one_refuses(
        pair: tuple[RedisServer, RedisServer]) -> None:
    master, replica = pair
    assert replica.proc is not None
    producer = Producer(settings(master))
    replica_client = redis.Redis(port=replica.port)
    try:
        first = producer.enqueue(call(1, key="k-1"))
        # Acknowledged means already on the replica.
        assert replica_client.exists(f"dispatcher:call:{first}") == 1
        assert producer.enqueue_many([call(2), call(3)], "inbox")

        os.kill(replica.proc.pid, signal.SIGSTOP)  # replication stalls
        with pytest.raises(QueueUnavailable, match="0 confirmed"):
            producer.enqueue(call(4, key="k-4"))
        # A retry answered from the record the refused attempt wrote (a duplicate, which
        # writes nothing itself) still waits for the replica to have that record.
        with pytest.raises(QueueUnavailable):
            producer.enqueue(call(4, key="k-4"))
        os.kill(replica.proc.pid, signal.SIGCONT)
        again = producer.enqueue(call(4, key="k-4"))
        assert replica_client.exists(f"dispatcher:call:{again}") == 1
    finally:
        producer.close()
        replica_client.close()


def test_a_claim_no_replica_confirms_is_given_back_unsent(
        pair: tuple[RedisServer, RedisServer]) -> None:
    master, replica = pair
    assert replica.proc is not None
    s = settings(master)
    producer = Producer(s)
    client = redis.Redis(port=master.port)
    lifecycle = Lifecycle(client, s)
    try:
        call_id = producer.enqueue(call(1))
        os.kill(replica.proc.pid, signal.SIGSTOP)
        claim = lifecycle.claim(call_id, 1)
        assert claim.kind == "held" and "0 of 1 confirmed" in claim.detail
        assert client.hget(f"dispatcher:call:{call_id}", "state") == b"held"
        assert client.zscore("dispatcher:inflight", call_id) is None
        os.kill(replica.proc.pid, signal.SIGCONT)
    finally:
        producer.close()
        client.close()


def test_the_worker_is_warned_when_the_master_has_too_few_replicas(
        alone: RedisServer, pair: tuple[RedisServer, RedisServer]) -> None:
    from dispatcher.replicas import shortfall

    lone = redis.Redis(port=alone.port)
    assert "DISPATCHER_REDIS_WAIT=1 but the Redis master has 0 connected" in (
        shortfall(lone, 1) or "")
    assert shortfall(lone, 0) is None
    assert shortfall(redis.Redis(port=pair[0].port), 1) is None
