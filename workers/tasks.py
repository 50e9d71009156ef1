"""The one Celery task: deliver a call.

A call's whole life (see dispatcher/lifecycle.py for the state machine):
queued   -- enqueue wrote the record and, if capacity allows, published this message;
            otherwise the call waits in the ordered backlog ("held") for the scheduler.
sent     -- this task claims it (only the message of the current generation can),
            waits for its rate-limit slot (a few seconds at most) and POSTs it.
retried  -- network error, timeout, 5xx, 408: the call goes to the Redis schedule
            with tenacity backoff; a 429 pauses every sender instead. Forever.
scheduled-- due calls go back in line, oldest first; the breaker holds them all while
            the CAD is down and lets one probe through at a time.
dead     -- a 400 (or other permanent answer) or, if configured, too old: a dead
            letter that an operator inspects and replays (`dispatcher dlq`).
replayed -- back in line with the credentials configured now.
A redelivered or duplicate message finds its generation stale and does nothing.
"""

from __future__ import annotations

import threading
from typing import Any

from dispatcher.cad import CadClient
from dispatcher.delivery import Deliverer
from dispatcher.lifecycle import Lifecycle
from dispatcher.redisconn import connect
from workers.app import app, settings

_lock = threading.Lock()
_deliverer: Deliverer | None = None


def deliverer() -> Deliverer:
    """This process's Deliverer, built on first use (never at import, never before fork)."""
    global _deliverer
    with _lock:
        if _deliverer is None:
            client = connect(settings)
            _deliverer = Deliverer(Lifecycle(client, settings), CadClient(settings))
        return _deliverer


@app.task(name="dispatcher.deliver", acks_late=True, reject_on_worker_lost=True,
          ignore_result=True)
def deliver(call: str | dict[str, Any], gen: int) -> str:
    """Send call ``call`` (its id) if this message's generation is current.

    Messages published before the upgrade carry the whole envelope (a dict with
    ``id``): they are accepted as they are, so an upgrade loses no message in flight.
    """
    call_id = call if isinstance(call, str) else str(call["id"])
    return deliverer().deliver(call_id, int(gen))
