"""The Celery app, configured for durability, and the one way we publish a call message.

Celery's Redis transport is only the conveyor belt: a message says "send call X of
generation G" and carries the call payload. The truth about every call lives in our
own Redis records (`dispatcher.lifecycle`), so a lost, duplicated or redelivered
message cannot lose or double a call. Retries never use Celery's countdown/ETA
(they sit in worker memory and outlive the visibility timeout); they use the Redis
schedule instead.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from dispatcher.settings import Settings

#: Name of the one task; the worker side registers it under this name.
DELIVER_TASK = "dispatcher.deliver"
#: How long a publish may take, connection retries included, before it fails.
PUBLISH_TIMEOUT_S = 3.0


def make_celery(settings: Settings) -> Celery:
    """A Celery app for the given settings (no connection is opened here)."""
    app = Celery("sonoran-dispatcher", broker=settings.redis_url, set_as_current=False)
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
        },
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
    """Publishes deliver messages on the configured queue."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or make_celery(settings)

    def publish(self, payload: dict[str, Any], gen: int) -> None:
        """Send one message; raises on broker failure after bounded retries."""
        self.app.send_task(
            DELIVER_TASK,
            args=[payload, gen],
            queue=self.settings.queue_name,
            routing_key=self.settings.queue_name,
            ignore_result=True,
        )

    def close(self) -> None:
        self.app.close()
