"""dispatcher.lifecycle, schedule, deadletters and records on fakeredis with an injected clock."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest

from dispatcher.cad import CadClient
from dispatcher.call import Call, new_call_id
from dispatcher.deadletters import DeadLetters, Filter
from dispatcher.delivery import Deliverer
from dispatcher.keys import Keys
from dispatcher.lifecycle import LEASE_MARGIN_S, Enqueued, Lifecycle
from dispatcher.policy import CIRCUIT_FAILURE_THRESHOLD, DEFAULT_RATE_LIMIT_PAUSE_S, MAX_SLOT_WAIT_S
from dispatcher.producer import Producer
from dispatcher.records import Records
from dispatcher.schedule import Pump
from dispatcher.settings import Secret, Settings
from dispatcher.simulator import CadSimulator

ZSETS = ("held", "queued", "scheduled", "inflight", "pending", "dead")


@dataclass
class World:
    """Everything that shares one Redis, one clock and one fake publisher."""

    r: fakeredis.FakeRedis
    clock: Any
    publisher: Any
    settings: Settings
    lc: Lifecycle
    pump: Pump
    dead: DeadLetters
    records: Records

    def add(self, caller: str = "Jane Doe", idem: str | None = None, **kw: Any) -> Enqueued:
        """Enqueue a call now; then move the clock one second so times and ids order."""
        now = self.clock()
        call = Call.create(caller=caller, location="Route 68", description="Crash",
                           idempotency_key=idem, **kw).with_envelope(new_call_id(now), now)
        result = self.lc.enqueue(call)
        if result.publish:
            self.publisher.publish(call.to_dict(), result.gen)
        self.clock.advance(1.0)
        return result

    def state(self, call_id: str) -> str:
        record = self.records.get(call_id)
        assert record is not None
        return record.state

    def field(self, call_id: str, name: str) -> str | None:
        value: Any = self.r.hget(self.keys.call(call_id), name)
        return None if value is None else value.decode()

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.prefix)

    def oldest_held(self) -> str:
        """The call at the head of the line (the next one the pump releases)."""
        members: Any = self.r.zrange(self.keys.held, 0, 0)
        return str(members[0].decode())

    def where(self, call_id: str) -> list[str]:
        return [z for z in ZSETS if self.r.zscore(getattr(self.keys, z), call_id) is not None]

    def claim_published(self) -> list[str]:
        """Claim every published message once, newest generation only; return claim kinds."""
        kinds = []
        for payload, gen in list(self.publisher.published):
            kinds.append(self.lc.claim(payload["id"], gen).kind)
        self.publisher.published.clear()
        return kinds


@pytest.fixture
def world(r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> Callable[..., World]:
    def build(**overrides: Any) -> World:
        base: dict[str, Any] = {"community_id": "c", "api_key": Secret("lifecycle-key"),
                                "max_rate": 0.0}
        base.update(overrides)
        settings = Settings(**base)
        return World(
            r=r, clock=clock, publisher=publisher, settings=settings,
            lc=Lifecycle(r, settings, clock=clock),
            pump=Pump(r, settings, publisher, clock=clock),
            dead=DeadLetters(r, settings.prefix, clock=clock),
            records=Records(r, settings.prefix, clock=clock),
        )

    return build


# -- enqueue -----------------------------------------------------------------------------


def test_enqueue_when_idle_takes_the_fast_path(world: Callable[..., World]) -> None:
    w = world()

    result = w.add()

    assert (result.publish, result.gen, result.duplicate) == (True, 1, False)
    assert w.state(result.call_id) == "queued"
    assert w.where(result.call_id) == ["queued", "pending"]
    assert w.records.stats()["queued"] == 1


def test_enqueue_holds_once_the_rate_window_is_full(world: Callable[..., World]) -> None:
    w = world(max_rate=1.0)

    results = []
    for i in range(5):  # five calls in the same instant
        results.append(w.add(f"caller {i}"))
        w.clock.advance(-1.0)

    # One request a second (plus margin), slots reserved at most MAX_SLOT_WAIT_S ahead:
    # slots at 0, 1.03 and 2.06 s; the rest wait in line.
    assert [x.publish for x in results] == [True, True, True, False, False]
    assert [w.state(x.call_id) for x in results[3:]] == ["held", "held"]
    assert w.records.stats()["queued"] == 5


def test_enqueue_behind_a_backlog_is_held_even_with_capacity(world: Callable[..., World]) -> None:
    w = world(max_rate=1.0)
    for _ in range(4):  # four calls in the same instant: the fourth is held
        w.add()
        w.clock.advance(-1.0)
    w.clock.advance(100)  # the rate window is free again, but one call is still held

    assert w.add().publish is False


def test_an_idempotency_key_yields_the_same_id_and_one_record(
    world: Callable[..., World], r: fakeredis.FakeRedis
) -> None:
    w = world()

    first = w.add(idem="game-911-42")
    second = w.add(idem="game-911-42", caller="Someone Else")

    assert second.call_id == first.call_id
    assert second.duplicate and not second.publish
    assert len(list(r.scan_iter("dispatcher:call:*"))) == 1
    assert w.records.stats()["enqueued"] == 1
    assert len(w.publisher.published) == 1
    assert r.ttl(w.keys.idem("game-911-42")) > 0


def test_the_producer_api_honours_idempotency(
    world: Callable[..., World], r: fakeredis.FakeRedis
) -> None:
    w = world()
    producer = Producer(w.settings, client=r, publisher=w.publisher, clock=w.clock)
    call = Call.create(caller="A", location="B", description="C", idempotency_key="k1")

    ids = {producer.enqueue(call) for _ in range(3)}

    assert len(ids) == 1
    assert len(w.publisher.published) == 1


def test_a_failed_publish_keeps_the_call_for_the_orphan_sweep(
    world: Callable[..., World], r: fakeredis.FakeRedis
) -> None:
    w = world()
    w.publisher.fail = True
    producer = Producer(w.settings, client=r, publisher=w.publisher, clock=w.clock)

    call_id = producer.enqueue(Call.create(caller="A", location="B", description="C"))

    assert w.state(call_id) == "queued"
    w.publisher.fail = False
    w.clock.advance(w.pump.orphan_after_s + 1)
    report = w.pump.tick()
    assert (report.orphans, report.released) == (1, 1)
    assert w.publisher.published[0][0]["id"] == call_id


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


# -- retry and the schedule --------------------------------------------------------------


def test_retry_schedules_and_the_pump_promotes_oldest_first(world: Callable[..., World]) -> None:
    w = world()
    a, b = w.add("A").call_id, w.add("B").call_id
    assert w.claim_published() == ["claimed", "claimed"]
    t = w.clock()

    assert w.lc.retry(b, 1, t + 10, "timeout", None, None) == "scheduled"
    assert w.lc.retry(a, 1, t + 20, "HTTP 503", 503, "<html>") == "scheduled"

    record = w.records.get(a)
    assert record is not None
    assert (record.state, record.status, record.due, record.attempts) == (
        "scheduled", "scheduled", t + 20, 1)
    assert (record.status_code, record.response, record.last_error) == (503, "<html>", "HTTP 503")
    assert w.records.stats()["scheduled"] == 2

    w.clock.now = t + 15
    report = w.pump.tick()
    assert (report.due, report.released) == (1, 1)
    assert w.publisher.ids() == [b]

    w.claim_published()
    w.lc.retry(b, 2, t + 19, "timeout", None, None)
    w.clock.now = t + 25  # both due now: the one enqueued first goes first
    report = w.pump.tick()
    assert (report.due, report.released) == (2, 2)
    assert w.publisher.ids() == [a, b]
    assert [g for _, g in w.publisher.published] == [2, 3]


def test_claim_reports_the_failure_count_for_backoff(world: Callable[..., World]) -> None:
    w = world()
    call_id = w.add().call_id
    for gen in (1, 2, 3):
        claim = w.lc.claim(call_id, gen)
        assert claim.failures == gen - 1
        w.lc.retry(call_id, gen, w.clock(), "boom", None, None)
        w.pump.tick()


# -- the circuit breaker -----------------------------------------------------------------


def _fail(w: World, call_id: str, gen: int, due_in: float = 1000.0) -> str:
    assert w.lc.claim(call_id, gen).kind == "claimed"
    return w.lc.retry(call_id, gen, w.clock() + due_in, "timeout talking to the CAD", None, None)


def test_consecutive_failures_open_the_breaker_and_a_probe_closes_it(
    world: Callable[..., World],
) -> None:
    w = world()
    ids = [w.add(f"caller {i}").call_id for i in range(6)]
    w.publisher.published.clear()

    for i, call_id in enumerate(ids[:CIRCUIT_FAILURE_THRESHOLD]):
        assert w.records.stats()["circuit"] == "closed"
        _fail(w, call_id, 1)
        assert w.records.stats()["cad"]["consecutive_failures"] == i + 1
    assert w.records.stats()["circuit"] == "open"
    assert w.records.stats()["scheduled"] >= CIRCUIT_FAILURE_THRESHOLD - 1

    # The breaker holds the next call without spending an attempt.
    held = w.lc.claim(ids[5], 1)
    assert (held.kind, held.detail) == ("held", "circuit")
    assert w.state(ids[5]) == "held"
    assert w.field(ids[5], "attempts") == "0"
    opened = w.add("while open")
    assert opened.publish is False
    assert w.state(opened.call_id) == "held"
    everyone = [*ids, opened.call_id]

    # Nothing is released during the cooldown.
    assert w.pump.tick().released == 0
    w.clock.advance(w.lc.circuit.cooldown_s)
    assert w.records.stats()["circuit"] == "half_open"

    # After it, exactly one probe: the oldest call waiting in line.
    oldest_held = w.oldest_held()
    assert w.pump.tick().released == 1
    assert w.pump.tick().released == 0
    [(payload, gen)] = w.publisher.published
    probe = payload["id"]
    assert probe == oldest_held
    assert w.claim_published() == ["claimed"]
    assert w.pump.tick().released == 0
    assert w.r.hget(w.keys.circuit, "state") == b"half_open"
    assert w.publisher.published == []

    # The probe succeeds: closed, and every call on backoff comes back in line, in order.
    on_backoff = w.records.stats()["scheduled"]
    w.lc.delivered(probe, "10001", 200, "EMERGENCY CALL ADDED ID: 10001")
    assert w.records.stats()["circuit"] == "closed"
    report = w.pump.tick()
    assert report.flushed == on_backoff
    assert w.publisher.ids() == [i for i in everyone if i != probe]
    assert w.records.stats()["scheduled"] == 0


def test_a_failed_probe_reopens_with_a_longer_cooldown(world: Callable[..., World]) -> None:
    w = world()
    ids = [w.add().call_id for _ in range(CIRCUIT_FAILURE_THRESHOLD + 1)]
    w.publisher.published.clear()
    for call_id in ids[:CIRCUIT_FAILURE_THRESHOLD]:
        _fail(w, call_id, 1)
    assert w.lc.claim(ids[-1], 1).kind == "held"
    w.add("waits behind the probe")
    w.clock.advance(w.lc.circuit.cooldown_s)
    w.pump.tick()
    [(payload, gen)] = w.publisher.published
    w.publisher.published.clear()

    _fail(w, payload["id"], gen)

    assert w.records.stats()["circuit"] == "open"
    w.clock.advance(w.lc.circuit.cooldown_s)
    assert w.pump.tick().released == 0  # the cooldown doubled
    w.clock.advance(w.lc.circuit.cooldown_s)
    oldest_held = w.oldest_held()
    assert w.pump.tick().released == 1
    assert w.publisher.ids() == [oldest_held]


def test_a_success_resets_the_failure_count(world: Callable[..., World]) -> None:
    w = world()
    ids = [w.add().call_id for _ in range(9)]
    for call_id in ids[:4]:
        _fail(w, call_id, 1)
    w.lc.claim(ids[4], 1)
    w.lc.delivered(ids[4], "1", 200, "ok")
    for call_id in ids[5:]:
        _fail(w, call_id, 1)

    assert w.records.stats()["circuit"] == "closed"


def test_a_permanent_answer_proves_the_cad_is_up(world: Callable[..., World]) -> None:
    w = world()
    ids = [w.add().call_id for _ in range(6)]
    for call_id in ids[:4]:
        _fail(w, call_id, 1)
    w.lc.claim(ids[4], 1)
    w.lc.dead(ids[4], 1, "rejected", 400, "INVALID REQUEST TYPE", "rejected")
    _fail(w, ids[5], 1)

    assert w.records.stats()["circuit"] == "closed"


# -- 429 ---------------------------------------------------------------------------------


def test_a_429_pauses_everyone_without_counting_a_failure(world: Callable[..., World]) -> None:
    w = world()
    a = w.add("A")
    t_a = w.clock() - 1.0
    assert w.lc.claim(a.call_id, 1).kind == "claimed"

    assert w.lc.retry(a.call_id, 1, w.clock(), "429", 429, "<html>", rate_limited=True,
                      retry_after=10) == "held"

    assert w.state(a.call_id) == "held"
    assert w.r.zscore(w.keys.held, a.call_id) == t_a  # its place in line, by enqueue time
    assert (w.field(a.call_id, "failures"), w.field(a.call_id, "attempts")) == ("0", "1")
    stats = w.records.stats()
    assert stats["rate_limit_pause_s"] == 10
    assert stats["cad"]["consecutive_failures"] == 0
    assert stats["rate_limited"] == 1
    assert stats["circuit"] == "closed"

    b = w.add("B")  # capacity is 0 during the pause
    assert b.publish is False
    for _ in range(3):
        assert w.pump.tick().released == 0
        w.clock.advance(2.5)
    w.clock.now = t_a + 1 + 10  # the pause is over
    assert w.pump.tick().released == 2
    assert w.publisher.ids()[-2:] == [a.call_id, b.call_id]


def test_a_429_without_retry_after_pauses_the_default(world: Callable[..., World]) -> None:
    w = world()
    a = w.add()
    w.lc.claim(a.call_id, 1)

    w.lc.retry(a.call_id, 1, w.clock(), "429", 429, "", rate_limited=True)

    assert w.records.stats()["rate_limit_pause_s"] == DEFAULT_RATE_LIMIT_PAUSE_S


def test_a_claim_during_a_long_pause_is_held(world: Callable[..., World]) -> None:
    w = world()
    a, b = w.add(), w.add()
    w.lc.claim(a.call_id, 1)
    w.lc.retry(a.call_id, 1, w.clock(), "429", 429, "", rate_limited=True, retry_after=60)

    claim = w.lc.claim(b.call_id, 1)

    assert (claim.kind, claim.detail) == ("held", "paused")
    assert w.field(b.call_id, "attempts") == "0"


# -- the rate limit ----------------------------------------------------------------------


def test_claims_are_spaced_by_the_rate_and_a_far_slot_is_held(
    world: Callable[..., World],
) -> None:
    # Another process (unlimited) put four messages out at once.
    unlimited = world()
    ids = [unlimited.add(f"c{i}").call_id for i in range(4)]
    w = world(max_rate=1.0)
    t = w.clock()

    starts = []
    for call_id in ids[:3]:
        claim = w.lc.claim(call_id, 1)
        assert claim.kind == "claimed"
        assert claim.wait_s <= MAX_SLOT_WAIT_S
        starts.append(t + claim.wait_s)

    assert starts[0] == t
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert all(gap >= 1.0 for gap in gaps)
    assert gaps == pytest.approx([w.lc.flow.interval_s] * 2)

    # The messages waited past their slots, so the first claim re-slotted the line; the
    # fourth slot was further away than a worker may wait, so that call went back in
    # line at once (no slot reserved for it) and its message is now stale. No attempt.
    claim = w.lc.claim(ids[3], 1)
    assert (claim.kind, claim.detail) == ("stale", "held")
    assert w.state(ids[3]) == "held" and w.field(ids[3], "attempts") == "0"
    assert w.records.stats()["queued"] == 1
    assert w.records.stats()["in_flight"] == 3

    # Later, it gets the slot after the last one.
    w.clock.now = starts[-1]
    w.publisher.published.clear()
    w.pump.tick()
    [(payload, gen)] = w.publisher.published
    assert payload["id"] == ids[3]
    claim = w.lc.claim(ids[3], gen)
    assert claim.kind == "claimed"
    assert w.clock() + claim.wait_s - starts[-1] >= 1.0


def test_messages_that_waited_past_their_slots_are_sent_in_line_order(
    world: Callable[..., World],
) -> None:
    # Five calls released with slots one interval apart; no worker takes them until long
    # after (a worker reconnecting to a restarted Redis), and then its threads claim them
    # in the wrong order. The first stale claim re-slots the line; order is kept.
    w = world(max_rate=2.0)
    ids = [w.add(f"c{i}").call_id for i in range(5)]
    w.clock.now += 30.0
    t = w.clock()
    interval = w.lc.flow.interval_s

    starts = {}
    for call_id in [ids[3], ids[0], ids[4], ids[2], ids[1]]:
        claim = w.lc.claim(call_id, 1)
        assert claim.kind == "claimed"
        starts[call_id] = claim.start_at
    assert [starts[i] - t for i in ids] == pytest.approx([n * interval for n in range(5)])

    # The rate limiter continues after the re-slotted line.
    later = w.add("c5").call_id
    assert w.lc.claim(later, 1).start_at - t == pytest.approx(5 * interval)


def test_re_slotting_reserves_no_slot_beyond_the_longest_wait(
    world: Callable[..., World],
) -> None:
    # Three calls whose messages waited past their slots, and three newer ones whose
    # claims came first and hold the next three seconds. Re-slotting the old three would
    # put them beyond the longest slot wait: they go back in line, and the rate limiter
    # reserves nothing for them, so the next slot follows the last grant (no gap).
    w = world(max_rate=1.0)
    interval = w.lc.flow.interval_s
    old = []
    for i in range(3):
        old.append(w.add(f"old {i}").call_id)
        w.clock.advance(-1.0)
    w.clock.advance(5.0)
    new = []
    for i in range(3):
        new.append(w.add(f"new {i}").call_id)
        w.clock.advance(-1.0)
    now = w.clock()
    assert [w.lc.claim(call_id, 1).kind for call_id in new] == ["claimed"] * 3

    claim = w.lc.claim(old[0], 1)

    assert (claim.kind, claim.detail) == ("held", "rate")
    assert [w.state(call_id) for call_id in old] == ["held"] * 3
    tat = float(w.r.hget(w.keys.rate, "tat"))  # type: ignore[arg-type]
    assert tat - now == pytest.approx(3 * interval)


def test_the_breakers_probe_does_not_re_slot_the_line(world: Callable[..., World]) -> None:
    w = world(max_rate=2.0)
    ids = []
    for i in range(3):
        ids.append(w.add(f"c{i}").call_id)
        w.clock.advance(-1.0)
    slots = [w.field(call_id, "slot") for call_id in ids]
    tat = w.r.hget(w.keys.rate, "tat")
    w.r.hset(w.keys.circuit, mapping={"state": "open", "open_until": w.clock() + 1})
    w.clock.advance(5.0)

    claim = w.lc.claim(ids[0], 1)

    assert claim.kind == "claimed" and w.field(ids[0], "state") == "sending"
    assert w.r.hget(w.keys.circuit, "probe") == ids[0].encode()
    assert [w.field(call_id, "slot") for call_id in ids[1:]] == slots[1:]
    assert w.r.hget(w.keys.rate, "tat") == tat


@pytest.mark.parametrize("seed", range(20))
def test_no_two_grants_are_closer_than_the_limit(
    world: Callable[..., World], seed: int
) -> None:
    # Calls released together, claimed late (some after their slots) in a random order:
    # every grant stays the limit (1/rate) from every other, whatever order and lateness.
    rng = random.Random(seed)
    w = world(max_rate=rng.choice([1.0, 2.0, 5.0, 10.0]))
    calls = []
    for i in range(6):
        calls.append(w.add(f"c{i}").call_id)
        w.clock.advance(rng.uniform(-1.0, -0.9))  # undo most of add()'s second
    rng.shuffle(calls)
    starts = []
    for call_id in calls:
        w.clock.advance(rng.uniform(0, 0.8))
        claim = w.lc.claim(call_id, 1)
        if claim.kind == "claimed":
            starts.append(claim.start_at)
    starts.sort()
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) >= 2
    # Grants keep the limit itself; the send gate adds the margin between actual sends.
    assert min(gaps) >= w.lc.flow.limit_gap_s - 0.0011, gaps


def test_a_backlogs_first_claim_coming_late_leaves_no_slot_unused(
    world: Callable[..., World],
) -> None:
    # A backlog starts: six calls get slots at once, the first at the enqueue time itself,
    # so its claim always comes a little after it. Threads then claim out of order. Every
    # call must still be granted (none held for a later slot, which would leave its own
    # slot unused: a gap in the pacing).
    w = world(max_rate=2.0)
    ids = []
    for i in range(6):
        ids.append(w.add(f"c{i}").call_id)
        w.clock.advance(-1.0)  # all enqueued at the same instant
    w.clock.advance(0.012)
    kinds = {}
    for i in (0, 1, 3, 2, 4, 5):
        claim = w.lc.claim(ids[i], 1)
        kinds[i] = claim.kind
        w.clock.advance(0.002)
    assert set(kinds.values()) == {"claimed"}, kinds
    assert w.records.stats()["in_flight"] == 6


# -- recovery ----------------------------------------------------------------------------


def test_an_expired_lease_puts_the_call_back_in_line(world: Callable[..., World]) -> None:
    w = world()
    call_id = w.add().call_id
    w.publisher.published.clear()
    t = w.clock()
    w.lc.claim(call_id, 1)
    lease = w.settings.request_deadline_s + LEASE_MARGIN_S

    w.clock.now = t + lease - 0.5
    assert w.pump.tick().leases == 0
    w.clock.now = t + lease + 0.5
    report = w.pump.tick()

    assert (report.leases, report.released) == (1, 1)
    assert w.publisher.published[0][1] == 2
    assert w.field(call_id, "attempts") == "1"
    assert w.field(call_id, "failures") == "0"
    assert w.state(call_id) == "queued"
    # The worker that lost its lease can no longer record an outcome other than delivery.
    assert w.lc.retry(call_id, 1, w.clock(), "late", None, None) == "stale"
    assert w.lc.claim(call_id, 1).kind == "stale"
    assert w.lc.claim(call_id, 2).kind == "claimed"


def test_an_orphaned_message_is_published_again(world: Callable[..., World]) -> None:
    w = world()
    call_id = w.add().call_id
    w.publisher.published.clear()
    t = w.clock() - 1.0

    w.clock.now = t + w.pump.orphan_after_s - 1
    assert w.pump.tick().orphans == 0
    w.clock.now = t + w.pump.orphan_after_s + 1
    report = w.pump.tick()

    assert (report.orphans, report.released) == (1, 1)
    assert w.publisher.published == [(w.publisher.published[0][0], 2)]
    assert w.lc.claim(call_id, 1).kind == "stale"
    assert w.lc.claim(call_id, 2).kind == "claimed"


def test_drain_stops_when_nothing_moves(world: Callable[..., World]) -> None:
    w = world()
    for _ in range(3):
        w.add()

    assert w.pump.drain().total() == 0


# -- DISPATCHER_MAX_AGE_S ----------------------------------------------------------------


def test_old_waiting_calls_become_expired_dead_letters(world: Callable[..., World]) -> None:
    w = world(max_age_s=100.0)
    old = w.add("old").call_id
    w.lc.claim(old, 1)
    w.lc.retry(old, 1, w.clock() + 1000, "timeout", None, None)
    w.clock.advance(50)
    young = w.add("young").call_id
    w.lc.claim(young, 1)
    w.lc.retry(young, 1, w.clock() + 1000, "timeout", None, None)

    w.clock.advance(55)
    report = w.pump.tick()

    assert report.expired == 1
    assert w.state(old) == "dead" and w.state(young) == "scheduled"
    [record] = w.dead.list(Filter(reason="expired"))
    assert record.id == old
    assert "DISPATCHER_MAX_AGE_S" in (record.last_error or "")
    assert w.records.stats()["dead_by_reason"] == {"expired": 1}


def test_an_old_queued_call_expires_at_claim(world: Callable[..., World]) -> None:
    w = world(max_age_s=100.0)
    call_id = w.add().call_id
    w.clock.advance(100)

    assert w.lc.claim(call_id, 1).kind == "expired"
    assert w.state(call_id) == "dead"
    assert w.where(call_id) == ["dead"]


def test_without_max_age_calls_never_expire(world: Callable[..., World]) -> None:
    w = world()
    call_id = w.add().call_id
    w.clock.advance(10 * 24 * 3600)

    assert w.pump.tick().expired == 0
    assert w.lc.claim(call_id, 2).kind == "claimed"  # the orphan sweep re-published it


def test_a_replayed_expired_call_counts_its_age_from_the_replay(
    world: Callable[..., World],
) -> None:
    w = world(max_age_s=100.0)
    call_id = w.add().call_id
    w.clock.advance(200)
    w.lc.claim(call_id, 1)

    assert w.dead.replay(call_id) == "replayed"
    report = w.pump.tick()

    assert report.expired == 0 and report.released == 1
    assert w.lc.claim(call_id, 2).kind == "claimed"


def test_old_replayed_calls_at_the_head_do_not_hide_younger_expired_ones(
    world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    # More replayed calls than one sweep page sit at the head of `pending` (their enqueue
    # time is old, their age counts from the replay): the sweep pages past them.
    monkeypatch.setattr("dispatcher.schedule.BATCH", 3)
    w = world(max_age_s=100.0)
    replayed = [w.add(f"replayed {i}").call_id for i in range(7)]
    w.clock.advance(200)
    for call_id in replayed:
        w.lc.claim(call_id, 1)  # expired at claim
        assert w.dead.replay(call_id) == "replayed"
    young = w.add("young").call_id
    w.lc.claim(young, 1)
    w.lc.retry(young, 1, w.clock() + 1000, "timeout", None, None)
    w.clock.advance(150)  # young is now too old; the replayed ones too, from their replay
    for call_id in replayed:
        w.r.hset(w.keys.call(call_id), "age_from", w.clock())  # replayed again just now

    expired = sum(w.pump.tick().expired for _ in range(4))

    assert expired == 1
    assert w.state(young) == "dead"
    assert all(w.state(call_id) != "dead" for call_id in replayed)


# -- dead letters ------------------------------------------------------------------------


@pytest.fixture
def graveyard(world: Callable[..., World]) -> tuple[World, dict[str, str]]:
    """A rejected call, an expired call and an invalid entry, 100 s apart."""
    w = world(max_age_s=50.0)
    rejected = w.add("Jane Doe").call_id
    w.lc.claim(rejected, 1)
    w.lc.dead(rejected, 1, "rejected", 400, "INVALID API KEY",
              "the CAD rejected the call (400): INVALID API KEY")
    expired = w.add("John Roe").call_id
    w.clock.advance(100)
    w.lc.claim(expired, 1)
    w.clock.advance(100)
    invalid = w.dead.bury_invalid('{"caller": "x", oops', "entry is not valid JSON", "inbox")
    w.clock.advance(1)
    return w, {"rejected": rejected, "expired": expired, "invalid": invalid}


def test_dead_letters_list_newest_first_with_filters(
    graveyard: tuple[World, dict[str, str]],
) -> None:
    w, ids = graveyard
    t_invalid = w.clock() - 1

    def listed(**kw: Any) -> list[str]:
        limit = kw.pop("limit", None)
        return [rec.id for rec in w.dead.list(Filter(**kw), limit=limit)]

    assert listed() == [ids["invalid"], ids["expired"], ids["rejected"]]
    assert listed(reason="rejected") == [ids["rejected"]]
    assert listed(reason="invalid") == [ids["invalid"]]
    assert listed(reason="nope") == []
    assert listed(since=t_invalid - 150) == [ids["invalid"], ids["expired"]]
    assert listed(until=t_invalid - 150) == [ids["rejected"]]
    assert listed(since=t_invalid - 150, until=t_invalid - 1) == [ids["expired"]]
    assert listed(search="jane") == [ids["rejected"]]
    assert listed(search="ROE") == [ids["expired"]]
    assert listed(limit=2) == [ids["invalid"], ids["expired"]]
    assert w.dead.count() == 3


def test_a_dead_letter_record_has_the_contract_fields(
    graveyard: tuple[World, dict[str, str]],
) -> None:
    w, ids = graveyard

    record = w.dead.get(ids["rejected"])
    assert record is not None
    out = record.to_json(default_server_id="1")

    assert {"id", "call", "reason", "status_code", "response", "attempts", "enqueued_at",
            "dead_at"} <= set(out)
    assert out["status"] == "dead" and out["reason"] == "rejected"
    assert (out["status_code"], out["response"], out["attempts"]) == (400, "INVALID API KEY", 1)
    assert out["call"]["caller"] == "Jane Doe" and out["call"]["serverId"] == "1"
    assert "key" not in out["call"]
    assert out["enqueued_at"].endswith("+00:00") and out["dead_at"]
    expired = w.dead.get(ids["expired"])
    assert expired is not None and expired.status_code is None
    # An invalid inbox entry never became a call: no invented call, its raw text kept.
    invalid = w.dead.get(ids["invalid"])
    assert invalid is not None
    shown = invalid.to_json(default_server_id="1")
    assert shown["call"] is None and shown["raw"] == '{"caller": "x", oops'


def test_replay_puts_a_dead_letter_back_in_line(graveyard: tuple[World, dict[str, str]]) -> None:
    w, ids = graveyard
    call_id = ids["rejected"]

    assert w.dead.replay(call_id, actor="ops") == "replayed"

    record = w.records.get(call_id)
    assert record is not None
    assert (record.state, record.replays, record.reason) == ("held", 1, None)
    assert w.dead.get(call_id) is None
    assert w.field(call_id, "last_reason") == "rejected"
    [entry] = w.dead.audit()
    assert (entry["action"], entry["id"], entry["actor"]) == ("replay", call_id, "ops")
    assert w.records.stats()["dead"] == 2
    report = w.pump.tick()
    assert report.released == 1
    [(payload, gen)] = w.publisher.published[-1:]
    assert payload["id"] == call_id and payload["call"]["caller"] == "Jane Doe"
    assert w.lc.claim(call_id, gen).kind == "claimed"


def test_replay_of_something_not_dead_says_so(graveyard: tuple[World, dict[str, str]]) -> None:
    w, ids = graveyard
    w.dead.replay(ids["rejected"])
    live = w.add().call_id

    assert w.dead.replay(ids["rejected"]) == "not_dead"
    assert w.dead.replay(live) == "not_dead"
    assert w.dead.replay("01NOSUCHCALL00000000000000") == "missing"
    assert w.dead.replay(ids["invalid"]) == "unreplayable"
    assert len(w.dead.audit()) == 1


def test_purge_deletes_for_good(graveyard: tuple[World, dict[str, str]]) -> None:
    w, ids = graveyard
    live = w.add().call_id

    assert w.dead.purge(ids["expired"], actor="ops") is True
    assert w.records.get(ids["expired"]) is None
    assert w.dead.purge(ids["expired"]) is False
    assert w.dead.purge(live) is False
    assert w.state(live) == "queued"
    assert w.dead.audit()[0]["action"] == "purge"
    assert w.dead.count() == 2


def test_bury_invalid_keeps_the_raw_text(graveyard: tuple[World, dict[str, str]]) -> None:
    w, ids = graveyard

    record = w.dead.get(ids["invalid"])

    assert record is not None
    assert (record.reason, record.source, record.call) == ("invalid", "inbox", {})
    assert w.dead.raw(ids["invalid"]) == '{"caller": "x", oops'
    assert record.last_error == "entry is not valid JSON"
    assert len(ids["invalid"]) == 26


def test_bury_invalid_takes_the_entry_from_a_list_atomically(
    world: Callable[..., World], r: fakeredis.FakeRedis
) -> None:
    w = world()
    r.lpush("inbox:processing", b"junk")

    assert w.dead.bury_invalid("junk", "bad", "inbox", take_from=("inbox:processing", "junk"))
    assert r.llen("inbox:processing") == 0
    # Already gone (another bridge took it): nothing is recorded twice.
    assert w.dead.bury_invalid("junk", "bad", "inbox",
                               take_from=("inbox:processing", "junk")) == ""
    assert w.dead.count() == 1


# -- stats -------------------------------------------------------------------------------


def test_stats_have_the_contract_keys(world: Callable[..., World]) -> None:
    w = world()
    empty = w.records.stats()

    assert {"queued", "scheduled", "in_flight", "dead", "delivered", "oldest_age_s",
            "circuit"} <= set(empty)
    assert empty["oldest_age_s"] is None
    assert (empty["queued"], empty["dead"], empty["circuit"]) == (0, 0, "closed")

    first = w.add().call_id
    w.add()
    w.clock.advance(10.5)
    w.lc.claim(first, 1)
    stats = w.records.stats()
    assert stats["oldest_age_s"] == pytest.approx(12.5)
    assert (stats["queued"], stats["in_flight"]) == (1, 1)


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
        out = [deliverer.deliver(p["id"], gen) for p, gen in publisher.published]
        publisher.published.clear()
        return out

    def deliver(call_id: str) -> str:
        [gen] = [g for p, g in publisher.published if p["id"] == call_id]
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
