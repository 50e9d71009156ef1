"""Delivery messages are acknowledged in the worker's memory, not in Redis.

kombu's Redis transport emulates acks with two writes per message: on receipt it adds
the message to the ``unacked`` hash and ``unacked_index`` sorted set (one MULTI/EXEC),
on ack it removes it (another). They exist so that a message whose worker died comes
back after ``visibility_timeout``. A delivery message needs neither: it only says "send
call X of generation G", and our own records already bring back every call whose worker
died (a claimed call by its lease, a queued one by the orphan sweep, both long before the
visibility timeout of an hour). So for ``dispatcher.deliver`` messages the two writes are
skipped: a delivered call costs three Redis round trips, as it does plain Celery (the
fetch, our claim, our outcome), instead of five. docs/PERFORMANCE.md has the figures.

What stays as kombu does it:
- the prefetch limit (kombu's in-memory record of delivered messages is kept);
- a message the worker holds when it stops gracefully, or rejects with requeue, goes
  back to the queue at once (from memory instead of from the ``unacked`` hash);
- every other task (the read-back) keeps kombu's Redis bookkeeping.

A worker killed with SIGKILL loses the messages it held but had not started: their
calls are ``queued`` in our records, and the orphan sweep puts them back in line after
DISPATCHER_ORPHAN_AFTER_S (60 s); with kombu's bookkeeping they would have come back
after the visibility timeout (1 h). tests/integration/test_memory_acks.py shows the
memory path (no ``unacked`` write, a held message back in the queue on close, a
requeue); the chaos suite's SIGKILL and Redis-restart tests show the recovery.
"""

from __future__ import annotations

from typing import Any

#: Tasks whose messages are acknowledged in memory only.
MEMORY_ACKED = frozenset({"dispatcher.deliver"})

_PATCHED = ("append", "ack", "reject", "restore_by_tag")


def install(tasks: frozenset[str] = MEMORY_ACKED) -> bool:
    """Patch kombu's Redis QoS; False (kombu's own behaviour kept) if its shape changed."""
    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual

    qos = kombu_redis.QoS
    if getattr(qos, "_dispatcher_memory_acks", False):
        return True
    if not all(hasattr(qos, name) for name in _PATCHED) or not hasattr(
            kombu_redis.Channel, "_do_restore_message"):
        return False
    base = virtual.QoS
    redis_append, redis_ack = qos.append, qos.ack
    redis_reject, redis_restore_by_tag = qos.reject, qos.restore_by_tag

    def in_memory(self: Any) -> set[Any]:
        tags: set[Any] | None = self.__dict__.get("_dispatcher_in_memory")
        if tags is None:
            tags = self.__dict__["_dispatcher_in_memory"] = set()
        return tags

    def append(self: Any, message: Any, delivery_tag: Any) -> None:
        if (message.headers or {}).get("task") in tasks:
            in_memory(self).add(delivery_tag)
            base.append(self, message, delivery_tag)
            return
        redis_append(self, message, delivery_tag)

    def ack(self: Any, delivery_tag: Any) -> None:
        tags = in_memory(self)
        if delivery_tag in tags:
            tags.discard(delivery_tag)
            base.ack(self, delivery_tag)
            return
        redis_ack(self, delivery_tag)

    def reject(self: Any, delivery_tag: Any, requeue: bool = False) -> None:
        tags = in_memory(self)
        if delivery_tag in tags:
            if requeue:
                restore_by_tag(self, delivery_tag, leftmost=True)
            tags.discard(delivery_tag)
            base.ack(self, delivery_tag)
            return
        redis_reject(self, delivery_tag, requeue)

    def restore_by_tag(self: Any, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        tags = in_memory(self)
        if tag not in tags:
            redis_restore_by_tag(self, tag, client=client, leftmost=leftmost)
            return
        message = self._delivered.get(tag)
        if message is not None:
            info = message.delivery_info
            with self.channel.conn_or_acquire(client) as conn:
                self.channel._do_restore_message(message._raw, info["exchange"],
                                                 info["routing_key"], conn, leftmost)
        tags.discard(tag)

    for name, method in (("append", append), ("ack", ack), ("reject", reject),
                         ("restore_by_tag", restore_by_tag)):
        setattr(qos, name, method)
    setattr(qos, "_dispatcher_memory_acks", True)  # noqa: B010 (kombu's class, not ours)
    return True
