"""dispatcher.schedule: the pump promotes, reaps, expires and releases, oldest first."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatcher.deadletters import Filter
from dispatcher.lifecycle import LEASE_MARGIN_S
from dispatcher.policy import VERIFY_AFTER_S
from tests.unit.lifeworld import World

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


# -- recovery ----------------------------------------------------------------------------


def test_an_expired_lease_makes_the_call_wait_for_a_read_back(
        world: Callable[..., World]) -> None:
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

    assert (report.leases, report.released, report.readbacks) == (1, 0, 0)
    assert w.field(call_id, "attempts") == "1"
    assert w.field(call_id, "failures") == "0"
    assert w.state(call_id) == "verifying", "the CAD may have it: never re-sent blindly"
    # The worker that lost its lease can no longer record an outcome other than delivery.
    assert w.lc.retry(call_id, 1, w.clock(), "late", None, None) == "stale"
    assert w.lc.claim(call_id, 1).kind == "stale"
    # The read-back starts once the CAD had time to finish writing the call.
    w.clock.advance(VERIFY_AFTER_S)
    assert w.pump.tick().readbacks == 1
    assert [(s, g) for s, g, _ in w.publisher.readbacks] == [("", 1)]
    assert w.pump.tick().readbacks == 0, "one read-back of a server at a time"


def test_an_expired_lease_is_sent_again_where_the_cad_has_no_read_back(
        world: Callable[..., World]) -> None:
    w = world()
    call_id = w.add().call_id
    w.publisher.published.clear()
    w.r.hset(f"{w.settings.prefix}:readback", "unavailable_until", w.clock() + 10_000)
    w.lc.claim(call_id, 1)
    w.clock.advance(w.settings.request_deadline_s + LEASE_MARGIN_S + 1)
    report = w.pump.tick()
    assert (report.leases, report.released) == (1, 1)
    assert w.publisher.published[0][1] == 2
    assert w.state(call_id) == "queued"
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


def test_a_failed_publish_leaves_the_released_calls_to_the_orphan_sweep(
    world: Callable[..., World]
) -> None:
    w = world()
    ids = [w.add().call_id for _ in range(2)]
    w.publisher.published.clear()  # their first messages were lost
    w.publisher.fail = True
    w.clock.advance(w.pump.orphan_after_s + 1)

    report = w.pump.tick()

    assert (report.orphans, report.released, report.publish_failed) == (2, 0, 2)
    assert [(w.state(i), w.field(i, "gen")) for i in ids] == [("queued", "2")] * 2
    w.publisher.fail = False
    w.clock.advance(w.pump.orphan_after_s + 1)
    report = w.pump.tick()
    assert (report.orphans, report.released, report.publish_failed) == (2, 2, 0)
    assert w.publisher.published == [(i, 3) for i in ids]


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
