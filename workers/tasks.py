"""The one Celery task: deliver a call.

A call's whole life (see dispatcher/lifecycle.py for the state machine):
queued   -- enqueue wrote the record and, if capacity allows, published this message;
            otherwise the call waits in the ordered backlog ("held") for the scheduler.
sent     -- this task claims it (only the message of the current generation can),
            waits for its rate-limit slot (a few seconds at most) and POSTs it.
retried  -- network error, timeout, 5xx, 408: the call goes to the Redis schedule
            with tenacity backoff; a 429 pauses every sender instead. Forever.
verifying-- the answer was lost after the request was written (or the worker died):
            the `readback` task reads the CAD's list; found: delivered, else re-sent.
scheduled-- due calls go back in line, oldest first; the breaker holds them all while
            the CAD is down and lets one probe through at a time.
dead     -- a 400 (or other permanent answer) or, if configured, too old: a dead
            letter that an operator inspects and replays (`dispatcher dlq`).
replayed -- back in line with the credentials configured now.
A redelivered or duplicate message finds its generation stale and does nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dispatcher import communities
from dispatcher.cad import CadClient
from dispatcher.cli.console import first_line
from dispatcher.delivery import Deliverer
from dispatcher.errors import ConfigError
from dispatcher.lifecycle import Lifecycle
from dispatcher.readback import Verifier
from dispatcher.redisconn import connect
from workers.app import app, settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
#: Per community (by name): its Deliverer and Verifier, sharing one Redis client.
_served: dict[str, tuple[Deliverer, Verifier]] = {}
_live: communities.Live | None = None
_generation = 0


def _serve(community: str) -> tuple[Deliverer, Verifier]:
    """This process's Deliverer and Verifier of ``community`` ('' : the default), built
    on first use (never at import, never before fork), and again after the communities
    file is reloaded (`dispatcher.communities.Live`)."""
    with _lock:
        served_now = _current(refresh=False)
        served = _served.get(community)
        if served is None:
            if community and community not in served_now.by_name:
                served_now = _current(refresh=True)  # added by a reload not seen yet
            one = served_now.get(community or None).settings
            assert _live is not None  # made by _current
            client = _live.client
            cad = CadClient(one)
            served = (Deliverer(Lifecycle(client, one), cad), Verifier(client, one, cad))
            _served[community] = served
        return served


def _current(refresh: bool) -> communities.Communities:
    """The communities now (``refresh``: read the file and counter at once); after a
    reload the Deliverers and Verifiers are made anew. Called under ``_lock``."""
    global _live, _generation
    if _live is None:
        _live = communities.Live(settings, connect(settings))
    served_now = _live.refresh() if refresh else _live.current()
    if _live.generation != _generation:  # keys rotated, communities added or removed
        _served.clear()
        _generation = _live.generation
    return served_now


def deliverer(community: str = "") -> Deliverer:
    """This process's Deliverer of ``community`` ('' : the default)."""
    return _serve(community)[0]


def verifier(community: str = "") -> Verifier:
    """This process's Verifier of ``community`` (built with its Deliverer)."""
    return _serve(community)[1]


@app.task(name="dispatcher.deliver", acks_late=True, reject_on_worker_lost=True,
          ignore_result=True)
def deliver(call: str | dict[str, Any], gen: int, community: str = "") -> str:
    """Send call ``call`` (its id) of ``community`` ('': the default) if this message's
    generation is current.

    Messages published before the upgrade carry the whole envelope (a dict with
    ``id``): they are accepted as they are, so an upgrade loses no message in flight.
    """
    call_id = call if isinstance(call, str) else str(call["id"])
    try:
        served = deliverer(community)
    except ConfigError as exc:
        return _not_served("call", call_id, community, exc)
    return served.deliver(call_id, int(gen))


def _not_served(what: str, name: str, community: str, exc: Exception) -> str:
    """A message of a community no longer in the file (removed by a reload): the message
    goes, the call stays in Redis under the community's prefix (`dispatcher stats` lists
    it) and is sent once the community is back (the orphan sweep re-publishes it)."""
    log.warning("%s %s of community %r not served: %s; it waits in Redis until the "
                "community is back in DISPATCHER_COMMUNITIES", what, name, community,
                first_line(exc))
    return "unknown-community"


@app.task(name="dispatcher.readback", acks_late=True, reject_on_worker_lost=True,
          ignore_result=True)
def readback(server: str, gen: int, start_at: float = 0.0, community: str = "") -> str:
    """Read server ``server``'s calls back from the CAD and settle its verifying calls,
    if this message's generation is still the server's current read-back."""
    try:
        served = verifier(community)
    except ConfigError as exc:
        return _not_served("read-back of server", str(server), community, exc)
    return served.run(str(server), int(gen), float(start_at))
