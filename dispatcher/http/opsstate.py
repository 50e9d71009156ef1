"""The operations page's state: one `Ops` per app, built from the settings, kept on
``app.extensions``; the views of `opspage`, `login` and `probes` read it with `ops()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from flask import Response, current_app, render_template
from prometheus_client import CollectorRegistry

from dispatcher.deadletters import DeadLetters
from dispatcher.heartbeat import Heartbeats
from dispatcher.history import History
from dispatcher.http.auth import OperatorAuth
from dispatcher.http.refusals import RefusalLog
from dispatcher.http.throttle import LoginThrottle
from dispatcher.metrics import registry_for
from dispatcher.records import Records
from dispatcher.schedule import release_now
from dispatcher.settings import Settings

# A stable logger name operators filter on (kept from before the move into http/).
log = logging.getLogger("dispatcher.ops")

#: Where the `Ops` lives in ``app.extensions``.
EXTENSION = "dispatcher.ops"


@dataclass(frozen=True)
class Ops:
    """What the operator routes read and change, each over the one Redis client."""

    settings: Settings
    client: redis.Redis
    records: Records
    dead: DeadLetters
    beats: Heartbeats
    history: History
    registry: CollectorRegistry
    auth: OperatorAuth
    throttle: LoginThrottle
    refusals: RefusalLog
    kick: _Kick

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis) -> Ops:
        from dispatcher.communities import load

        prefix = settings.prefix
        # /metrics: every community, labelled, when there are several (read at start).
        every = {c.name: c.prefix for c in load(settings)}
        return cls(settings, client, Records(client, prefix), DeadLetters(client, prefix),
                   Heartbeats(client, prefix), History(client, prefix),
                   registry_for(client, prefix, every),
                   OperatorAuth(settings.ops_token, client, prefix),
                   LoginThrottle(client, prefix), RefusalLog(log), _Kick(settings, client))


def ops() -> Ops:
    """The `Ops` of the app serving this request."""
    found: Ops = current_app.extensions[EXTENSION]
    return found


class _Kick:
    """One schedule tick after a replay (`schedule.release_now`, as the CLI does), so
    replayed calls get a message at once; the scheduler would release them within its
    next tick anyway."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client

    def tick(self) -> None:
        try:
            release_now(self.settings, self.client)
        except Exception as exc:  # the scheduler releases them on its own next tick
            log.warning("ops: replayed calls wait for the scheduler (%s)", type(exc).__name__)


def html(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/html")


def forbidden() -> Response:
    return html(render_template("ops/forbidden.html"), 403)
