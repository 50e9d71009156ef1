"""The operations page's state: one `Ops` per app, built from the settings, kept on
``app.extensions``; the views of `opspage`, `login` and `probes` read it with `ops()`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl

import redis
from flask import Response, current_app, render_template, request
from prometheus_client import CollectorRegistry

from dispatcher.communities import Live
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
_RELOAD_LOCK = threading.Lock()


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
    #: Every community's settings by name, when there are several (the page's filter).
    others: dict[str, Settings] = field(default_factory=dict)
    #: The communities as they change (the door's), and the generation this was built for.
    live: Live | None = None
    generation: int = 0

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis, live: Live | None = None) -> Ops:
        from dispatcher.communities import load

        prefix = settings.prefix
        served = live.current() if live is not None else load(settings)
        # /metrics: every community, labelled, when there are several (read at start).
        every = {c.name: c.prefix for c in served}
        others = {c.name: c.settings for c in served} if len(served) > 1 else {}
        return cls(settings, client, Records(client, prefix), DeadLetters(client, prefix),
                   Heartbeats(client, prefix), History(client, prefix),
                   registry_for(client, prefix, every),
                   OperatorAuth(settings.ops_token, client, prefix),
                   LoginThrottle(client, prefix), RefusalLog(log), _Kick(settings, client),
                   others, live, live.generation if live is not None else 0)

    def current(self) -> Ops:
        """This state, or one built anew for the communities a reload brought."""
        if self.live is None:
            return self
        served = self.live.current()
        if self.live.generation == self.generation:
            return self
        with _RELOAD_LOCK:
            found: Ops = current_app.extensions[EXTENSION]
            if found.generation == self.live.generation:
                return found
            main = served.get(served.default_name or served.names[0]).settings
            fresh = Ops.build(main, self.client, self.live)
            current_app.extensions[EXTENSION] = fresh
            return fresh

    def of(self, name: str) -> Ops:
        """The same page for community ``name`` (its figures, dead letters and chart;
        the login, throttle and metrics stay the deployment's)."""
        own = self.others.get(name)
        if own is None or own.prefix == self.settings.prefix:
            return self
        p = own.prefix
        return replace(self, settings=own, records=Records(self.client, p),
                       dead=DeadLetters(self.client, p), history=History(self.client, p),
                       kick=_Kick(own, self.client))


def ops() -> Ops:
    """The `Ops` of the app serving this request, for the community it names (the query's
    ``community``, or the one in a form's ``back`` view) when there are several."""
    found: Ops = current_app.extensions[EXTENSION]
    found = found.current()
    if not found.others:
        return found
    name = request.args.get("community") or dict(
        parse_qsl(request.form.get("back", "") if request.method == "POST" else "")
    ).get("community")
    return found.of(name) if name else found


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
