"""Our pushed Celery message is the one Celery itself would publish (format guard)."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from dispatcher.broker import DELIVER_TASK, Publisher, make_celery
from dispatcher.settings import Settings

pytestmark = pytest.mark.integration


def test_our_message_has_celerys_shape_and_body(redis_url: str, rclient: redis.Redis) -> None:
    settings = Settings(redis_url=redis_url)
    payload = {"v": 1, "id": "01TEST", "call": {"caller": "x"}}
    app = make_celery(settings)
    app.send_task(DELIVER_TASK, args=[payload, 3], queue=settings.queue_name,
                  routing_key=settings.queue_name, ignore_result=True)
    theirs = json.loads(rclient.rpop(settings.queue_name))  # type: ignore[arg-type]
    Publisher(settings, client=rclient).publish(payload, 3)
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
    assert decode(ours)[:2] == decode(theirs)[:2] == [[payload, 3], {}]
    assert "caller" not in ours["headers"]["argsrepr"], "logs show the id, not the call"


def test_the_kombu_internal_our_worker_patches_is_still_there() -> None:
    from kombu.transport import redis as kombu_redis

    import workers.app  # noqa: F401  (applies the patch)

    channel = kombu_redis.Channel
    assert hasattr(channel, "_create_client"), "kombu changed: review workers/app.py"
    assert channel.conn_or_acquire.__qualname__.endswith("conn_or_acquire")
    assert "workers.app" in channel.conn_or_acquire.__module__
