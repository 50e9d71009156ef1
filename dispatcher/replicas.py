"""Redis WAIT: a write we act on is on DISPATCHER_REDIS_WAIT replicas first.

Redis replicates asynchronously: a master that dies right after answering may take its
last writes with it, and the replica promoted in its place never had them. With
DISPATCHER_REDIS_WAIT=N, the writes the dispatcher acts on outside Redis are followed,
on the same connection, by ``WAIT N timeout``:

- an enqueue (`dispatcher.lifecycle.Lifecycle.enqueue`, the producer's batches): the
  producer hears of its call (an id, the door's 200, an inbox entry leaving the inbox)
  only once N replicas have it; otherwise QueueUnavailable (the door's 503);
- a worker's claim (`Lifecycle.claim`): the call is POSTed to the CAD only once N
  replicas know it is being sent, so a promoted replica never sends it a second time
  (it sees the lease, and the read-back settles it); otherwise the call goes back in line.

WAIT counts the replicas that have every write this connection made; a script that
wrote nothing (a duplicate enqueue, answered from a record some other connection wrote)
would make it return at once. So each WAIT follows a PUBLISH on `Keys.replicated`,
which Redis propagates to replicas: the WAIT then covers everything the master held
at that moment, that earlier record included. Nobody subscribes to the channel.

A refused write may still be on the master and reach the replicas later: the call
may be queued after all. A retry with the same idempotency key is safe (it finds the
call and answers its id); without a key, a retry may queue the call twice.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis

from dispatcher.errors import QueueUnavailable
from dispatcher.keys import Keys

#: How long one WAIT waits for the replicas, in ms. Replication on a healthy network
#: takes well under a millisecond; a second means a replica is down or far behind.
#: It stays below the producer's socket timeout (1.5 s) so WAIT answers before the
#: socket gives up.
WAIT_TIMEOUT_MS = 1000


class ReplicaWait:
    """Runs a pipeline of writes, then WAITs for ``replicas`` replicas on its connection."""

    def __init__(self, replicas: int, channel: str, timeout_ms: int = WAIT_TIMEOUT_MS) -> None:
        self.replicas = replicas
        self.channel = channel
        self.timeout_ms = timeout_ms

    @classmethod
    def for_prefix(cls, replicas: int, prefix: str) -> ReplicaWait | None:
        """The WAIT of DISPATCHER_REDIS_WAIT=``replicas``; None for 0 (no wait)."""
        return cls(replicas, Keys(prefix).replicated) if replicas > 0 else None

    def execute(self, pipe: redis.client.Pipeline) -> tuple[list[Any], int]:
        """The replies of ``pipe``'s commands, and how many replicas confirmed them."""
        pipe.publish(self.channel, b"")
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        replies = list(pipe.execute())
        count = int(replies[-1])
        if count < self.replicas:
            _ask_sentinels(pipe.connection_pool)
        return replies[:-2], count

    def confirmed(self, count: int) -> bool:
        return count >= self.replicas

    def refusal(self, count: int) -> QueueUnavailable:
        """The QueueUnavailable of a write fewer than ``replicas`` replicas confirmed."""
        return QueueUnavailable(
            f"the queue (Redis) could not confirm the write on {self.replicas} replica(s) "
            f"within {self.timeout_ms} ms ({count} confirmed, DISPATCHER_REDIS_WAIT): the "
            "call may still be queued; retry with the same idempotency key")


def _ask_sentinels(pool: Any) -> None:
    """After a refused WAIT, ask the sentinels (sentinel:// only) whether this master was
    replaced: a master the sentinels gave up on while it was unreachable, back now, keeps
    its clients (and no replicas) until they demote it, seconds later. redis-py then
    closes our idle connections to it, and the caller's retry reaches the new master."""
    ask = getattr(pool, "get_master_address", None)
    if ask is None:
        return
    with contextlib.suppress(redis.RedisError):
        ask()


def shortfall(client: redis.Redis, replicas: int) -> str | None:
    """A warning when the master has fewer connected replicas than WAIT needs, else None."""
    if replicas <= 0:
        return None
    info = client.info("replication")
    connected = int(info.get("connected_slaves", 0))
    if connected >= replicas:
        return None
    return (f"DISPATCHER_REDIS_WAIT={replicas} but the Redis master has {connected} "
            "connected replica(s): no call is acknowledged or sent until enough replicas "
            "connect (producers get QueueUnavailable, the door 503)")
