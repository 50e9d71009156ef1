"""The Celery/kombu layer: our message has Celery's shape; the worker survives broker loss."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from dispatcher.broker import DELIVER_TASK, Publisher, make_celery
from dispatcher.call import Call
from dispatcher.producer import Producer
from dispatcher.records import Records
from dispatcher.redisconn import connect
from dispatcher.settings import Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, RedisServer, base_env, wait_for

pytestmark = pytest.mark.integration


def test_our_message_has_celerys_shape_and_body(redis_url: str, rclient: redis.Redis) -> None:
    settings = Settings(redis_url=redis_url)
    app = make_celery(settings)
    app.send_task(DELIVER_TASK, args=["01TEST", 3], queue=settings.queue_name,
                  routing_key=settings.queue_name, ignore_result=True)
    theirs = json.loads(rclient.rpop(settings.queue_name))  # type: ignore[arg-type]
    Publisher(settings, client=rclient).publish_many([("01TEST", 3)])
    ours = json.loads(rclient.rpop(settings.queue_name))  # type: ignore[arg-type]

    assert set(ours) == set(theirs)
    assert set(ours["headers"]) == set(theirs["headers"])
    assert set(ours["properties"]) == set(theirs["properties"])
    for key in ("task", "lang", "retries", "ignore_result"):
        assert ours["headers"][key] == theirs["headers"][key]
    for key in ("delivery_mode", "priority", "body_encoding"):
        assert ours["properties"][key] == theirs["properties"][key]
    assert ours["properties"]["delivery_info"]["routing_key"] == settings.queue_name
    assert ours["content-type"] == theirs["content-type"]
    decode = lambda m: json.loads(base64.b64decode(m["body"]))  # noqa: E731
    assert decode(ours)[:2] == decode(theirs)[:2] == [["01TEST", 3], {}]
    assert ours["headers"]["argsrepr"] == "['01TEST', 3]"


def test_the_kombu_internal_our_worker_patches_is_still_there() -> None:
    from kombu.transport import redis as kombu_redis

    import workers.app  # noqa: F401  (applies the patch)

    channel = kombu_redis.Channel
    assert hasattr(channel, "_create_client"), "kombu changed: review workers/app.py"
    assert hasattr(channel, "_pool"), "kombu changed: review workers/app.py"
    assert channel.conn_or_acquire.__qualname__.endswith("conn_or_acquire")
    assert "workers.app" in channel.conn_or_acquire.__module__


def test_the_worker_survives_a_redis_restart_with_a_call_in_flight(
    sim: CadSimulator, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    # kombu closes the lost connection's transport, then asks that channel for a client
    # to restore the unacked message, and Celery stops the worker on the AttributeError
    # (kombu 5.7, with or without our ack-client patch). The worker must ride it out.
    server = RedisServer(appendonly=True, fsync="always").start()
    try:
        env = base_env(server.url, sim)
        worker = procs(["worker"], env)
        wait_for(lambda: "ready" in worker.output(), 60, message="worker ready")
        sim.set_latency(1500)
        producer = Producer(Settings.from_env(env), wait_s=0.5)
        call_id = producer.enqueue(Call.create(caller="a", location="b", description="c"))
        time.sleep(0.7)  # the worker is inside the 1.5 s POST, its message unacked
        server.kill()
        time.sleep(2.5)
        server.start()
        sim.set_latency(0)
        producer.enqueue(Call.create(caller="d", location="e", description="after"))
        wait_for(lambda: len(sim.calls()) == 2, 60, message="both calls delivered")
        time.sleep(1.0)
        assert worker.alive(), worker.output()[-3000:]
        assert "Unrecoverable error" not in worker.output()
        assert [c["call"]["caller"] for c in sim.calls()] == ["a", "d"]
        record = Records(connect(Settings.from_env(env)), "dispatcher").get(call_id)
        assert record is not None and record.state == "delivered"
        producer.close()
    finally:
        server.stop()
