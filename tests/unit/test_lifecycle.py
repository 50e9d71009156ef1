"""dispatcher.lifecycle on fakeredis with an injected clock: enqueue, claim, outcomes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fakeredis

from dispatcher.cad import CadClient
from dispatcher.call import Call
from dispatcher.deadletters import DeadLetters, Filter
from dispatcher.delivery import Deliverer
from dispatcher.keys import Keys
from dispatcher.lifecycle import Lifecycle
from dispatcher.producer import Producer
from dispatcher.records import Records
from dispatcher.schedule import Pump
from dispatcher.settings import Settings
from dispatcher.simulator import CadSimulator
from tests.unit.lifeworld import World

# -- enqueue -----------------------------------------------------------------------------


def test_enqueue_when_idle_takes_the_fast_path(world: Callable[..., World]) -> None:
    w = world()

    result = w.add()

    assert (result.kind, result.gen) == ("pushed", 1)
    assert w.state(result.call_id) == "queued"
    assert w.where(result.call_id) == ["queued", "pending"]
    assert w.records.stats()["queued"] == 1


def test_enqueue_holds_once_the_rate_window_is_full(world: Callable[..., World]) -> None:
    w = world(max_rate=1.0)

    results = []
    for i in range(5):  # five calls in the same instant
        results.append(w.add(f"caller {i}"))
        w.clock.advance(-1.0)

    # One request a second (plus margin), a message at most RELEASE_AHEAD_S (0.5 s) ahead
    # of its slot: the first goes at once; the next slot (1.008 s) is further, so the rest
    # wait in line, no worker thread asleep on them.
    assert [x.kind for x in results] == ["pushed"] + ["held"] * 4
    assert [w.state(x.call_id) for x in results[1:]] == ["held"] * 4
    assert w.records.stats()["queued"] == 5
    # The scheduler gives the next its message once its slot is within the lookahead.
    w.clock.advance(0.4)
    assert w.pump.tick().released == 0
    w.clock.advance(0.2)
    assert w.pump.tick().released == 1
    assert sorted(w.state(x.call_id) for x in results[1:]) == ["held"] * 3 + ["queued"]


def test_enqueue_behind_a_backlog_is_held_even_with_capacity(world: Callable[..., World]) -> None:
    w = world(max_rate=1.0)
    for _ in range(4):  # four calls in the same instant: the fourth is held
        w.add()
        w.clock.advance(-1.0)
    w.clock.advance(100)  # the rate window is free again, but one call is still held

    assert w.add().kind == "held"


def test_an_idempotency_key_yields_the_same_id_and_one_record(
    world: Callable[..., World], r: fakeredis.FakeRedis
) -> None:
    w = world()

    first = w.add(idem="game-911-42")
    second = w.add(idem="game-911-42", caller="Someone Else")

    assert second.call_id == first.call_id
    assert second.kind == "duplicate"
    assert len(list(r.scan_iter("dispatcher:call:*"))) == 1
    assert w.records.stats()["enqueued"] == 1
    assert len(w.publisher.published) == 1
    assert r.ttl(w.keys.idem("game-911-42")) > 0


# -- claim -------------------------------------------------------------------------------


def test_claim_with_a_stale_generation_is_refused(world: Callable[..., World]) -> None:
    w = world()
    call_id = w.add().call_id

    assert w.lc.claim(call_id, 2).kind == "stale"
    assert w.lc.claim(call_id, 0).kind == "stale"
    claim = w.lc.claim(call_id, 1)
    assert claim.kind == "claimed"
    assert claim.call is not None and claim.call.id == call_id and claim.call.caller == "Jane Doe"
    assert w.lc.claim(call_id, 1).kind == "stale"  # a duplicated message
    assert w.lc.claim("no-such-call", 1).kind == "missing"
    assert w.state(call_id) == "sending"
    assert w.where(call_id) == ["inflight", "pending"]


def test_delivered_is_final(world: Callable[..., World]) -> None:
    w = world()
    call_id = w.add().call_id
    w.lc.claim(call_id, 1)

    assert w.lc.delivered(call_id, "10001", 200, "EMERGENCY CALL ADDED ID: 10001") == "delivered"

    for gen in (0, 1, 2, 3):
        assert w.lc.claim(call_id, gen).kind == "stale"
    assert w.lc.retry(call_id, 1, w.clock() + 5, "boom", 503, "") == "stale"
    assert w.lc.dead(call_id, 1, "rejected", 400, "INVALID API KEY", "x") == "stale"
    assert w.lc.delivered(call_id, "10002", 200, "again") == "already"
    record = w.records.get(call_id)
    assert record is not None
    assert (record.state, record.status, record.cad_call_id, record.attempts) == (
        "delivered", "delivered", "10001", 1)
    assert w.where(call_id) == []
    stats = w.records.stats()
    assert (stats["delivered"], stats["queued"], stats["in_flight"]) == (1, 0, 0)
    assert w.r.ttl(w.keys.call(call_id)) > 0


# -- the key never reaches Redis ---------------------------------------------------------


def test_a_full_cycle_stores_no_api_key(
    r: fakeredis.FakeRedis, clock: Any, publisher: Any, sim: CadSimulator,
    cad_settings: Callable[..., Settings], recording_sleep: Any, api_key: str,
    leak_scan: Callable[..., list[bytes]],
) -> None:
    settings = cad_settings(max_rate=0.0)
    lc = Lifecycle(r, settings, clock=clock)
    pump = Pump(r, settings, publisher, clock=clock)
    dead = DeadLetters(r, settings.prefix, clock=clock)
    producer = Producer(settings, client=r, publisher=publisher, clock=clock)
    deliverer = Deliverer(lc, CadClient(settings), sleep=recording_sleep, clock=clock)

    def deliver_published() -> list[str]:
        out = [deliverer.deliver(call_id, gen) for call_id, gen in publisher.published]
        publisher.published.clear()
        return out

    def deliver(call_id: str) -> str:
        [gen] = [g for i, g in publisher.published if i == call_id]
        return deliverer.deliver(call_id, gen)

    ids = [producer.enqueue(Call.create(caller=f"c{i}", location="l", description="d",
                                        idempotency_key=f"k{i}")) for i in range(4)]
    # Every outcome, with the CAD (or a proxy) echoing the key where it can.
    sim.set_fault("error", count=1, status=500, body=f"echo key={api_key}")
    assert deliver(ids[0]) == "scheduled"
    sim.set_fault("reject", count=1, text=f"INVALID API KEY {api_key}")
    assert deliver(ids[1]) == "dead"
    sim.set_credentials(api_key="rotated")
    assert deliver(ids[2]) == "dead"
    sim.set_credentials(api_key=api_key)
    sim.set_fault("ratelimit", count=1, retry_after=1)
    assert deliver(ids[3]) == "rate_limited"
    publisher.published.clear()
    echoed = dead.get(ids[1])
    assert echoed is not None and echoed.response == "INVALID API KEY ***"
    assert leak_scan(r) == []
    dead.bury_invalid("not json", "entry is not valid JSON", "inbox")
    assert [dead.replay(i) for i in ids[1:3]] == ["replayed", "replayed"]
    dead.purge(dead.list(Filter(reason="invalid"))[0].id)
    for _ in range(4):
        clock.advance(30)
        pump.tick()
        deliver_published()

    assert [Records(r).get(i).state for i in ids] == ["delivered"] * 4  # type: ignore[union-attr]
    assert r.llen(Keys().audit) == 3
    assert leak_scan(r) == []
    assert len(sim.calls()) == 4
