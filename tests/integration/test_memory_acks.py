"""Delivery messages are acked in memory (workers/acks.py), against a real Redis: kombu
writes nothing of theirs to its ``unacked`` keys, a message held by a closing channel
goes back to the queue, and every other message keeps kombu's bookkeeping."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import redis

from dispatcher.broker import Publisher, make_celery
from dispatcher.call import Call
from dispatcher.producer import Producer
from dispatcher.records import Records
from dispatcher.redisconn import connect
from dispatcher.settings import Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, wait_for
from workers import acks

pytestmark = pytest.mark.integration

def unacked(client: redis.Redis) -> tuple[int, int]:
    return client.hlen("unacked"), client.zcard("unacked_index")


def test_a_worker_sends_a_call_without_kombus_unacked_writes(
    redis_url: str, rclient: redis.Redis, sim: CadSimulator, procs: Callable[..., Proc],
) -> None:
    env = base_env(redis_url, sim)
    worker = procs(["worker"], env)
    wait_for(lambda: "ready" in worker.output(), 60, message="worker ready")
    sim.set_latency(1500)
    producer = Producer(Settings.from_env(env), wait_s=0.5)
    call_id = producer.enqueue(Call.create(caller="a", location="b", description="c"))
    records = Records(connect(Settings.from_env(env)), "dispatcher")

    def state() -> str | None:
        record = records.get(call_id)
        return None if record is None else record.state

    wait_for(lambda: state() == "sending", 10, message="the call in flight")
    assert unacked(rclient) == (0, 0)  # the message the worker holds is in its memory only
    assert rclient.llen(Settings.from_env(env).queue_name) == 0
    wait_for(lambda: len(sim.calls()) == 1, 10, message="delivered")
    wait_for(lambda: state() == "delivered", 10, message="recorded")
    assert unacked(rclient) == (0, 0)
    assert worker.alive()
    producer.close()


@pytest.fixture
def channel(redis_url: str) -> object:
    assert acks.install()
    app = make_celery(Settings(redis_url=redis_url))
    with app.connection() as conn:
        yield conn.default_channel
    app.close()


def test_a_held_delivery_message_goes_back_to_the_queue_when_its_channel_closes(
    redis_url: str, rclient: redis.Redis, channel: object,
) -> None:
    settings = Settings(redis_url=redis_url)
    Publisher(settings, client=rclient).publish_many([("01HELD", 3)])
    message = channel.basic_get(settings.queue_name, no_ack=False)  # type: ignore[attr-defined]
    assert message is not None
    assert rclient.llen(settings.queue_name) == 0
    assert unacked(rclient) == (0, 0)

    channel.close()  # type: ignore[attr-defined]  # a worker stopping gracefully

    back = json.loads(rclient.rpop(settings.queue_name))  # type: ignore[arg-type]
    assert back["headers"]["task"] == "dispatcher.deliver"
    assert back["headers"]["redelivered"] is True
    assert back["body"] == message._raw["body"]
    assert unacked(rclient) == (0, 0)


def test_a_rejected_delivery_message_is_requeued_and_an_acked_one_is_gone(
    redis_url: str, rclient: redis.Redis, channel: object,
) -> None:
    settings = Settings(redis_url=redis_url)
    Publisher(settings, client=rclient).publish_many([("01A", 1), ("01B", 1)])
    first = channel.basic_get(settings.queue_name, no_ack=False)  # type: ignore[attr-defined]
    second = channel.basic_get(settings.queue_name, no_ack=False)  # type: ignore[attr-defined]
    first.ack()
    second.reject(requeue=True)
    assert rclient.llen(settings.queue_name) == 1
    assert unacked(rclient) == (0, 0)
    channel.close()  # type: ignore[attr-defined]  # nothing left to restore
    assert rclient.llen(settings.queue_name) == 1
    back = json.loads(rclient.rpop(settings.queue_name))  # type: ignore[arg-type]
    assert back["body"] == second._raw["body"]


def test_other_messages_keep_kombus_redis_bookkeeping(
    redis_url: str, rclient: redis.Redis, channel: object,
) -> None:
    settings = Settings(redis_url=redis_url)
    publisher = Publisher(settings, client=rclient)
    publisher.push([(settings.queue_name, publisher.readback_message("1", 1, time.time()))])
    message = channel.basic_get(settings.queue_name, no_ack=False)  # type: ignore[attr-defined]
    assert unacked(rclient) == (1, 1)
    message.ack()
    assert unacked(rclient) == (0, 0)


def test_the_kombu_internals_acks_patches_are_still_there() -> None:
    from kombu.transport import redis as kombu_redis

    assert acks.install(), "kombu's Redis QoS changed: review workers/acks.py"
    for name in ("append", "ack", "reject", "restore_by_tag"):
        assert getattr(kombu_redis.QoS, name).__module__ == "workers.acks", name
    assert hasattr(kombu_redis.Channel, "_do_restore_message")
