"""Shared fixtures of the unit tests: fake Redis, an injected clock, the CAD simulator."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from dispatcher.deadletters import DeadLetters
from dispatcher.lifecycle import Lifecycle
from dispatcher.records import Records
from dispatcher.schedule import Pump
from dispatcher.settings import Secret, Settings
from dispatcher.simulator import CadSimulator
from tests.unit.lifeworld import World

COMMUNITY = "unit-community"
#: Distinctive enough that finding it anywhere means it leaked.
API_KEY = "UNIT-api-key-7f3c9d1e5b"


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakePublisher:
    """Stands in for the Celery publisher: every message pushed to the queue list (by the
    enqueue script or by the scheduler) is read back as (call id, gen)."""

    queue_key = "dispatcher"

    def __init__(self) -> None:
        self._published: list[tuple[str, int]] = []
        self._readbacks: list[tuple[str, int, float]] = []
        self.client: Any = None
        self.fail = False

    def bind(self, client: Any) -> FakePublisher:
        if self.client is None:
            self.client = client
        return self

    def message(self, call_id: str, gen: int) -> str:
        return json.dumps({"id": call_id, "gen": gen})

    def readback_message(self, server: str, gen: int, start: float) -> str:
        return json.dumps({"readback": [server, gen, start]})

    def push(self, messages: list[tuple[str, str]]) -> None:
        if self.fail and messages:
            raise ConnectionError("broker down")
        for queue, message in messages:
            self.client.lpush(queue, message)

    def publish_many(self, items: list[tuple[str, int]]) -> None:
        self.push([(self.queue_key, self.message(call_id, gen)) for call_id, gen in items])

    @property
    def published(self) -> list[tuple[str, int]]:
        """Everything pushed so far, oldest first (clear() forgets what was read)."""
        while self.client is not None:
            raw = self.client.rpop(self.queue_key)
            if raw is None:
                break
            data = json.loads(raw)
            if "readback" in data:
                server, gen, start = data["readback"]
                self._readbacks.append((server, gen, start))
            else:
                self._published.append((data["id"], data["gen"]))
        return self._published

    @property
    def readbacks(self) -> list[tuple[str, int, float]]:
        """The read-backs pushed so far (pop() takes one)."""
        self.published  # noqa: B018 (reads the list)
        return self._readbacks

    def ids(self) -> list[str]:
        return [call_id for call_id, _ in self.published]

    def close(self) -> None:
        pass


class RecordingSleep:
    """An injected sleep that records instead of sleeping (and may run a side effect)."""

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        self.calls: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def r(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def sim() -> Iterator[CadSimulator]:
    with CadSimulator(community_id=COMMUNITY, api_key=API_KEY, server_ids=("1", "7")) as s:
        yield s


@pytest.fixture
def cad_settings(sim: CadSimulator) -> Callable[..., Settings]:
    """Settings pointing at the simulator with short timeouts; keyword overrides allowed."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "api_url": sim.url,
            "community_id": COMMUNITY,
            "api_key": Secret(API_KEY),
            "read_timeout_s": 0.5,
            "connect_timeout_s": 0.5,
        }
        base.update(overrides)
        return Settings(**base)

    return make


def redis_dump(client: Any) -> list[bytes]:
    """Every key name and every value in Redis, as bytes, for leak scans."""
    out: list[bytes] = []
    for key in client.scan_iter(count=1000):
        out.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                out += [field, value]
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, fields in client.xrange(key):
                for field, value in fields.items():
                    out += [field, value]
        else:  # pragma: no cover - a new structure must be added above
            raise AssertionError(f"unscanned Redis type {kind} at {key!r}")
    return out


@pytest.fixture
def leak_scan() -> Callable[[fakeredis.FakeRedis, str], list[bytes]]:
    """Return every Redis key or value that contains the secret."""

    def scan(client: fakeredis.FakeRedis, secret: str = API_KEY) -> list[bytes]:
        needle = secret.encode()
        return [v for v in redis_dump(client) if needle in v]

    return scan


@pytest.fixture
def api_key() -> str:
    """The API key the simulator accepts and the settings carry."""
    return API_KEY


@pytest.fixture
def community() -> str:
    return COMMUNITY


@pytest.fixture
def recording_sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def world(r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> Callable[..., World]:
    def build(ahead_s: float | None = None, **overrides: Any) -> World:
        """``ahead_s``: another release lookahead than RELEASE_AHEAD_S (e.g. a whole
        slot wait, so that several calls of a slow rate get their messages at once)."""
        base: dict[str, Any] = {"community_id": "c", "api_key": Secret("lifecycle-key"),
                                "max_rate": 0.0}
        base.update(overrides)
        settings = Settings(**base)
        w = World(
            r=r, clock=clock, publisher=publisher, settings=settings,
            lc=Lifecycle(r, settings, clock=clock),
            pump=Pump(r, settings, publisher, clock=clock),
            dead=DeadLetters(r, settings.prefix, clock=clock),
            records=Records(r, settings.prefix, clock=clock),
        )
        if ahead_s is not None:
            w.lc.flow = w.pump.flow = dataclasses.replace(w.lc.flow, ahead_s=ahead_s)
        return w

    return build
