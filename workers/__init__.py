"""The worker side: adapts Celery to `dispatcher.delivery` (``celery -A workers worker``)."""

from workers.app import app

__all__ = ["app"]
