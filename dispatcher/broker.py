"""The Celery app, configured for durability, and the one way we publish a call message.

Celery's Redis transport is only the conveyor belt: a message says "send call X of
generation G" (task args ``[call_id, gen]``) and nothing more. The truth about every
call lives in our own Redis records (`dispatcher.lifecycle`), so a lost, duplicated or
redelivered message cannot lose or double a call. Retries never use Celery's countdown/ETA
(they sit in worker memory and outlive the visibility timeout); they use the Redis
schedule instead.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from typing import Any

import redis
from celery import Celery
from kombu.utils.uuid import uuid

from dispatcher.settings import Settings

#: Names of the tasks; the worker side registers them under these names.
DELIVER_TASK = "dispatcher.deliver"
#: Read one server's calls back from the CAD to settle its verifying calls.
READBACK_TASK = "dispatcher.readback"


def make_celery(settings: Settings) -> Celery:
    """A Celery app for the given settings (no connection is opened here)."""
    from dispatcher.redisconn import kombu_broker

    # kombu reads fewer URL forms than redis-py: it gets the URL rebuilt from redis-py's
    # reading of REDIS_URL, and rediss:// gets certificate checks it would skip by itself.
    url, use_ssl, transport_extra = kombu_broker(settings)
    app = Celery("sonoran-dispatcher", broker=url, set_as_current=False)
    app.conf.update(
        # Ack after the task ran, and requeue if the worker died under it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message per worker slot: nothing waits in a worker's memory.
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue_name,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            # Longer than any wait inside a task (a slot wait plus one request).
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "retry_on_timeout": True,
            "health_check_interval": 10,
            **transport_extra,
        },
        broker_use_ssl=use_ssl,
        redis_backend_use_ssl=use_ssl,
        broker_heartbeat=0,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        enable_utc=True,
    )
    return app


class Publisher:
    """Builds deliver messages in Celery's own format and puts them on the queue's list.

    Celery's ``send_task`` costs two Redis round trips and more Python than the rest of an
    enqueue (an exchange lookup, then the push). We build the same message with Celery's
    own ``as_task_v2`` and kombu's envelope, so the enqueue script can push it in the same
    atomic step that records the call, and the scheduler can push a batch in one round
    trip. tests/integration/test_broker.py checks the message against one Celery publishes.
    """

    def __init__(self, settings: Settings, app: Celery | None = None,
                 client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.app = app or make_celery(settings)
        self.client = client
        self.queue_key = settings.queue_name  # kombu's list for priority 0 of this queue
        self._origin = f"{socket.gethostname()}-{os.getpid()}"

    def sharing(self, settings: Settings) -> Publisher:
        """A publisher for another community's settings, sharing this one's Celery app
        and Redis client (close only this one)."""
        return Publisher(settings, self.app, self.client)

    def bind(self, client: redis.Redis) -> Publisher:
        """Use this Redis client to push (the producer's or scheduler's own)."""
        if self.client is None:
            self.client = client
        return self

    def message(self, call_id: str, gen: int) -> str:
        """The JSON of one deliver message, as kombu's Redis transport stores it. A call
        of a community other than ``default`` names it (a third argument), so the worker
        that takes it serves it with that community's settings and keys."""
        return self._message(DELIVER_TASK, [call_id, gen, *self._community])

    @property
    def _community(self) -> list[str]:
        name = self.settings.community
        return [] if name == "default" else [name]

    def _message(self, task: str, args: list[Any]) -> str:
        task_id = uuid()
        m = self.app.amqp.as_task_v2(
            task_id, task, args=args, kwargs={}, ignore_result=True,
            origin=self._origin, argsrepr=repr(args), kwargsrepr="{}",
        )
        body = json.dumps(m.body, separators=(",", ":")).encode()
        properties = dict(m.properties)
        properties.update(
            delivery_mode=2,
            delivery_info={"exchange": "", "routing_key": self.queue_key},
            priority=0,
            body_encoding="base64",
            delivery_tag=uuid(),
        )
        return json.dumps({
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": m.headers,
            "properties": properties,
        }, separators=(",", ":"))

    def publish_many(self, items: list[tuple[str, int]]) -> None:
        """Push several (call id, gen) messages in one round trip (oldest first out)."""
        if not items:
            return
        self.push([(self.queue_key, self.message(call_id, gen)) for call_id, gen in items])

    def push(self, messages: list[tuple[str, str]]) -> None:
        """Push (queue list, message JSON) pairs in one round trip, in order."""
        if not messages:
            return
        assert self.client is not None, "Publisher needs a Redis client to push"
        pipe = self.client.pipeline(transaction=False)
        for queue, message in messages:
            pipe.lpush(queue, message)
        pipe.execute()

    def readback_message(self, server: str, gen: int, start: float) -> str:
        """The JSON of one read-back message (the server's read-back generation and
        start time; a community other than ``default`` names it, a fourth argument)."""
        return self._message(READBACK_TASK, [server, gen, start, *self._community])

    def close(self) -> None:
        self.app.close()
