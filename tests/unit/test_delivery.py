"""dispatcher.delivery: a real Lifecycle on fakeredis, a real CadClient against the simulator."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest

from dispatcher.cad import CadClient
from dispatcher.call import Call, iso_utc
from dispatcher.delivery import Deliverer
from dispatcher.errors import RetryableError
from dispatcher.lifecycle import Lifecycle
from dispatcher.policy import BACKOFF_INITIAL_S, BACKOFF_JITTER_S
from dispatcher.producer import Producer
from dispatcher.records import CallRecord, Records
from dispatcher.schedule import Pump
from dispatcher.settings import Settings
from dispatcher.simulator import FIRST_CALL_ID, CadSimulator


@dataclass
class Rig:
    settings: Settings
    lc: Lifecycle
    producer: Producer
    deliverer: Deliverer
    records: Records
    publisher: Any
    clock: Any
    sleeps: list[float]

    def enqueue(self, caller: str = "Jane Doe") -> str:
        call_id = self.producer.enqueue(
            Call.create(caller=caller, location="Route 68", description="Crash", postal="350"))
        self.clock.advance(0.001)
        return call_id

    def deliver_all(self) -> list[str]:
        out = [self.deliverer.deliver(call_id, gen) for call_id, gen in self.publisher.published]
        self.publisher.published.clear()
        return out

    def record(self, call_id: str) -> CallRecord:
        record = self.records.get(call_id)
        assert record is not None
        return record


@pytest.fixture
def rig(
    r: fakeredis.FakeRedis, clock: Any, publisher: Any, cad_settings: Callable[..., Settings]
) -> Callable[..., Rig]:
    def build(on_sleep: Callable[[float], None] | None = None, cad: Any = None,
              **overrides: Any) -> Rig:
        settings = cad_settings(**{"max_rate": 0.0, **overrides})
        lc = Lifecycle(r, settings, clock=clock)
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            # Records instead of sleeping; time still passes for everyone else.
            sleeps.append(seconds)
            clock.advance(seconds)
            if on_sleep is not None:
                on_sleep(seconds)

        deliverer = Deliverer(lc, cad or CadClient(settings), sleep=sleep, clock=clock)
        return Rig(settings, lc, Producer(settings, client=r, publisher=publisher, clock=clock),
                   deliverer, Records(r, settings.prefix, clock=clock), publisher, clock, sleeps)

    return build


def test_delivered(rig: Callable[..., Rig], sim: CadSimulator) -> None:
    rg = rig()
    call_id = rg.enqueue()

    assert rg.deliver_all() == ["delivered"]

    record = rg.record(call_id)
    assert (record.state, record.cad_call_id, record.status_code) == (
        "delivered", str(FIRST_CALL_ID), 200)
    assert record.response == f"EMERGENCY CALL ADDED ID: {FIRST_CALL_ID}"
    assert record.attempts == 1
    assert sim.calls()[0]["call"]["metaData"] == {
        "postal": "350", "dispatcherCallId": call_id,
        "dispatcherQueuedAt": iso_utc(record.enqueued_at or 0)}
    assert rg.sleeps == []


def test_a_5xx_is_scheduled_with_backoff(rig: Callable[..., Rig], sim: CadSimulator) -> None:
    rg = rig()
    call_id = rg.enqueue()
    sim.set_fault("error", count=1, status=503)
    now = rg.clock()

    assert rg.deliver_all() == ["scheduled"]

    record = rg.record(call_id)
    assert record.state == "scheduled"
    assert record.due is not None
    assert now + BACKOFF_INITIAL_S <= record.due <= now + BACKOFF_INITIAL_S + BACKOFF_JITTER_S
    assert (record.status_code, record.attempts) == (503, 1)
    assert record.last_error is not None and "503" in record.last_error
    assert rg.records.stats()["scheduled"] == 1


def test_a_timeout_makes_the_call_wait_for_a_read_back(
        rig: Callable[..., Rig], sim: CadSimulator) -> None:
    rg = rig()
    call_id = rg.enqueue()
    sim.set_fault("hang", count=1, max_s=5)

    assert rg.deliver_all() == ["verifying"]

    record = rg.record(call_id)
    assert record.state == "verifying" and record.status_code is None
    assert "in time" in (record.last_error or "")
    assert rg.records.stats()["verifying"] == 1


def test_a_refused_connection_is_scheduled(rig: Callable[..., Rig], sim: CadSimulator) -> None:
    rg = rig()
    call_id = rg.enqueue()
    sim.set_fault("refuse")

    assert rg.deliver_all() == ["scheduled"], "nothing reached the CAD: no read-back needed"
    assert rg.record(call_id).state == "scheduled"


def test_the_backoff_grows_with_consecutive_failures(
    rig: Callable[..., Rig], sim: CadSimulator
) -> None:
    rg = rig()
    call_id = rg.enqueue()
    sim.set_fault("error", status=503)
    waits = []
    for gen in (1, 2, 3):
        now = rg.clock()
        assert rg.deliverer.deliver(call_id, gen) == "scheduled"
        due = rg.record(call_id).due
        assert due is not None
        waits.append(due - now)
        rg.clock.now = due
        # Due: back in line and released with the next generation.
        Pump(rg.lc.client, rg.settings, rg.publisher, clock=rg.clock).tick()
        rg.publisher.published.clear()

    assert waits[0] < waits[1] < waits[2]
    assert 4 <= waits[2] <= 5


def test_a_400_is_a_dead_letter(rig: Callable[..., Rig], sim: CadSimulator) -> None:
    rg = rig()
    call_id = rg.enqueue()
    sim.set_credentials(api_key="rotated")

    assert rg.deliver_all() == ["dead"]

    record = rg.record(call_id)
    assert (record.state, record.reason, record.status_code) == ("dead", "rejected", 400)
    assert record.response == "INVALID API KEY"
    assert rg.records.stats()["dead"] == 1
    assert rg.records.stats()["circuit"] == "closed"


def test_a_429_holds_the_call_and_pauses_everyone(
    rig: Callable[..., Rig], sim: CadSimulator
) -> None:
    rg = rig()
    call_id = rg.enqueue()
    sim.set_fault("ratelimit", count=1, retry_after=20)

    assert rg.deliver_all() == ["rate_limited"]

    record = rg.record(call_id)
    assert record.state == "held" and record.status_code == 429
    stats = rg.records.stats()
    assert stats["rate_limit_pause_s"] == pytest.approx(20)
    assert stats["cad"]["consecutive_failures"] == 0
    assert rg.lc.client.hget(rg.lc.keys.call(call_id), "failures") == b"0"


def test_a_duplicate_message_is_dropped(rig: Callable[..., Rig], sim: CadSimulator) -> None:
    rg = rig()
    call_id = rg.enqueue()
    [(_, gen)] = rg.publisher.published

    assert rg.deliverer.deliver(call_id, gen) == "delivered"
    assert rg.deliverer.deliver(call_id, gen) == "stale"
    assert rg.deliverer.deliver("01NOSUCHCALL00000000000000", 1) == "missing"
    assert len(sim.received()) == 1


def test_an_expired_call_is_not_sent(rig: Callable[..., Rig], sim: CadSimulator) -> None:
    rg = rig(max_age_s=60.0)
    call_id = rg.enqueue()
    rg.clock.advance(61)

    assert rg.deliver_all() == ["expired"]
    assert rg.record(call_id).reason == "expired"
    assert sim.received() == []


def test_the_rate_slot_is_waited_for_with_the_injected_sleep(
    rig: Callable[..., Rig], sim: CadSimulator
) -> None:
    rg = rig(max_rate=1.0)
    rg.enqueue("A")
    rg.enqueue("B")

    # B's slot is an interval away, beyond the lookahead: it waits in line, no thread on it.
    assert rg.deliver_all() == ["delivered"]
    rg.clock.advance(0.6)
    assert Pump(rg.lc.client, rg.settings, rg.publisher, clock=rg.clock).tick().released == 1
    assert rg.deliver_all() == ["delivered"]

    # B sleeps to its slot, then (when A went out a moment after its own slot) at the
    # send gate for the rest of the interval: all through the injected sleep.
    assert 1 <= len(rg.sleeps) <= 2
    assert rg.lc.flow.interval_s - 0.6 - 0.01 <= sum(rg.sleeps) <= rg.lc.flow.ahead_s
    assert len(sim.calls()) == 2


def test_a_429_during_the_slot_wait_gives_the_call_back_unsent(
    rig: Callable[..., Rig], sim: CadSimulator
) -> None:
    holder: dict[str, Any] = {}

    def another_worker_hits_a_429(_: float) -> None:
        lc, first = holder["lc"], holder["first"]
        lc.retry(first, 1, lc.clock(), "429", 429, "", rate_limited=True, retry_after=30)

    rg = rig(on_sleep=another_worker_hits_a_429, max_rate=1.0)
    holder["lc"] = rg.lc
    holder["first"] = rg.enqueue("A")
    second = rg.enqueue("B")
    assert rg.lc.claim(holder["first"], 1).kind == "claimed"  # in flight on another worker
    rg.clock.advance(0.6)  # B's slot comes within the lookahead: it gets its message
    assert Pump(rg.lc.client, rg.settings, rg.publisher, clock=rg.clock).tick().released == 1

    assert rg.deliverer.deliver(second, 1) == "held"

    record = rg.record(second)
    assert (record.state, record.attempts) == ("held", 0)
    assert sim.received() == []


def test_a_redis_blink_after_the_send_does_not_resend(
    rig: Callable[..., Rig], sim: CadSimulator, server: fakeredis.FakeServer,
    cad_settings: Callable[..., Settings],
) -> None:
    real = CadClient(cad_settings())

    class RedisDropsRightAfterTheSend:
        def send(self, call: Call) -> Any:
            result = real.send(call)
            server.connected = False
            return result

    def redis_comes_back(_: float) -> None:
        server.connected = True

    rg = rig(on_sleep=redis_comes_back, cad=RedisDropsRightAfterTheSend())
    call_id = rg.enqueue()

    assert rg.deliver_all() == ["delivered"]

    assert rg.sleeps  # it waited for Redis (without sleeping)
    assert rg.record(call_id).state == "delivered"
    assert len(sim.calls()) == 1


def test_the_departure_is_reported_when_the_bytes_left_not_when_the_answer_came(
    rig: Callable[..., Rig], sim: CadSimulator, r: fakeredis.FakeRedis,
) -> None:
    # The CAD answers in 300 ms; the gate hears of the departure before that, from the
    # connection that wrote the request, and the next "go" is spaced from it.
    rg = rig(max_rate=1.0)
    sim.set_latency(300)
    seen: list[tuple[str, float]] = []
    rate = rg.lc.rate
    reported = rate.sent

    def sent() -> float | None:
        seen.append(("sent", time.monotonic()))
        return reported()

    rate.sent = sent  # type: ignore[method-assign]
    started = time.monotonic()
    rg.enqueue()
    assert rg.deliver_all() == ["delivered"]
    answered = time.monotonic()

    assert seen and seen[0][1] - started < 0.2 < answered - started, (seen, answered)
    key = rg.lc.rate.key
    assert r.hget(key, "sent_pending") is None, "the report cleared the wait"
    assert float(r.hget(key, "last_send") or 0) >= rg.clock() - 0.001


def test_a_failed_send_still_reports_its_departure(
    rig: Callable[..., Rig], sim: CadSimulator, r: fakeredis.FakeRedis,
) -> None:
    rg = rig(max_rate=1.0)
    sim.set_fault("error", count=1, status=503)
    rg.enqueue()
    assert rg.deliver_all() == ["scheduled"]
    assert r.hget(rg.lc.rate.key, "sent_pending") is None


def test_a_refused_connection_writes_nothing_and_still_frees_the_gate(
    rig: Callable[..., Rig], sim: CadSimulator, r: fakeredis.FakeRedis,
) -> None:
    # Nothing was written, so the connection never calls back; the deliverer reports
    # once the exchange failed, and the next "go" does not wait for the timeout.
    rg = rig(max_rate=1.0)
    sim.set_fault("refuse")
    written: list[bool] = []
    rg.enqueue()
    call = Call.create(caller="A", location="Route 68", description="Crash", postal="350")
    with pytest.raises(RetryableError):
        rg.deliverer.cad.send(call, on_written=lambda: written.append(True))
    assert written == []
    assert rg.deliver_all() == ["scheduled"]
    assert r.hget(rg.lc.rate.key, "sent_pending") is None
