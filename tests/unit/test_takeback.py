"""Taking calls back (dispatcher.takeback): every place a call can be, and the races.

Each test drives the same scripts the worker, the scheduler and the doors run (fake Redis,
an injected clock); the worker's removal request itself is tested in test_cad.py and,
against the simulator, in tests/integration/test_takeback.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatcher.policy import VERIFY_AFTER_S
from dispatcher.readback import Verifier
from dispatcher.takeback import TakeBacks, UnknownCall, resolve
from tests.unit.lifeworld import World
from tests.unit.test_readback import ListingCad, gen, listed, sent, start, verifying


@pytest.fixture
def w(world: Callable[..., World]) -> World:
    return world()


def takebacks(w: World) -> TakeBacks:
    return TakeBacks(w.r, w.settings.prefix, clock=w.clock)


def test_a_queued_call_is_cancelled_and_its_message_never_sends_it(w: World) -> None:
    call_id = w.add().call_id
    assert w.state(call_id) == "queued"

    assert takebacks(w).remove(call_id) == (call_id, "cancelled")

    assert w.lc.claim(call_id, 1).kind == "stale", "the worker holding its message drops it"
    record = w.records.get(call_id)
    assert record is not None and (record.status, record.cancelled_at) == ("cancelled",
                                                                           w.clock())
    stats = w.records.stats()
    assert (stats["queued"], stats["cancelled"], stats["oldest_age_s"]) == (0, 1, None)
    assert w.r.ttl(w.keys.call(call_id)) > 0, "kept for status as long as a delivered call"


@pytest.mark.parametrize("place", ["held", "scheduled", "dead"])
def test_a_call_not_yet_sent_is_cancelled_wherever_it_waits(w: World, place: str) -> None:
    first = w.add().call_id
    call_id = w.add().call_id
    if place == "held":
        assert w.state(call_id) in ("held", "queued")
        w.r.hset(w.keys.call(call_id), "state", "held")
    else:
        assert sent(w, call_id)
        if place == "scheduled":
            w.lc.retry(call_id, gen(w, call_id), w.clock() + 30, "503", 503, "")
        else:
            w.lc.dead(call_id, gen(w, call_id), "rejected", 400, "INVALID API KEY", "400")
    assert w.state(call_id) == place
    assert takebacks(w).remove(call_id)[1] == "cancelled"
    assert w.state(call_id) == "cancelled"
    assert w.state(first) == "queued", "the others are untouched"
    w.clock.advance(60)
    w.pump.drain()
    assert w.state(call_id) == "cancelled", "the schedule never brings it back"


def test_a_call_being_sent_is_removed_once_the_cad_answers(w: World) -> None:
    call_id = w.add().call_id
    assert sent(w, call_id)

    assert takebacks(w).remove(call_id)[1] == "pending"
    assert w.records.get(call_id).remove_requested  # type: ignore[union-attr]

    assert w.lc.delivered(call_id, "4242", 200, "EMERGENCY CALL ADDED ID: 4242") == "delivered"
    record = w.records.get(call_id)
    assert record is not None and (record.status, record.cad_call_id) == ("removing", "4242")
    # The removal goes through the line like a call: a message, a claim of op "remove".
    w.pump.tick()
    claim = w.lc.claim(call_id, gen(w, call_id))
    assert (claim.kind, claim.op, claim.cad_call_id) == ("claimed", "remove", "4242")
    assert w.lc.removed(call_id, gen(w, call_id), 200, "API ID(s) set!") == "removed"
    assert w.state(call_id) == "removed"
    assert w.records.stats()["removed"] == 1


@pytest.mark.parametrize("outcome", ["retry", "dead", "ratelimit"])
def test_a_call_being_sent_that_the_cad_did_not_create_is_cancelled(
        w: World, outcome: str) -> None:
    call_id = w.add().call_id
    assert sent(w, call_id)
    takebacks(w).remove(call_id)
    g = gen(w, call_id)
    if outcome == "retry":
        assert w.lc.retry(call_id, g, w.clock() + 1, "503", 503, "") == "cancelled"
    elif outcome == "ratelimit":
        assert w.lc.retry(call_id, g, w.clock(), "429", 429, "", rate_limited=True) \
            == "cancelled"
    else:
        assert w.lc.dead(call_id, g, "rejected", 400, "INVALID API KEY", "400") == "cancelled"
    assert w.state(call_id) == "cancelled"
    assert w.records.stats()["dead"] == 0


def test_a_call_taken_back_while_its_outcome_is_unknown_follows_the_read_back(
        world: Callable[..., World]) -> None:
    w = world()
    found, lost = verifying(w, 2)
    tb = takebacks(w)
    assert [tb.remove(i)[1] for i in (found, lost)] == ["pending", "pending"]
    cad = ListingCad([listed(77, found)])
    verifier = Verifier(w.r, w.settings, cad, clock=w.clock,  # type: ignore[arg-type]
                        sleep=lambda s: None)
    assert verifier.run(*start(w)) == "settled"
    assert w.records.get(found).status == "removing"  # type: ignore[union-attr]
    assert w.state(lost) == "cancelled", "not in the CAD: nothing to remove, never re-sent"


def test_a_delivered_call_is_removed_through_the_line_and_a_refusal_is_a_removal_dead_letter(
        w: World) -> None:
    call_id = w.add().call_id
    assert sent(w, call_id)
    w.lc.delivered(call_id, "900", 200, "EMERGENCY CALL ADDED ID: 900")

    assert takebacks(w).remove("900") == (call_id, "removing"), "the CAD's id names it too"
    assert w.r.ttl(w.keys.call(call_id)) == -1, "kept until the removal is done"
    w.pump.tick()
    g = gen(w, call_id)
    assert w.lc.claim(call_id, g).op == "remove"
    assert w.lc.dead(call_id, g, "rejected", 400, "INVALID API KEY", "400") == "dead"
    record = w.records.get(call_id)
    assert record is not None and (record.status, record.kind) == ("dead", "removal")
    # Its replay retries the removal, never the call.
    assert w.dead.replay(call_id) == "replayed"
    assert w.records.get(call_id).status == "removing"  # type: ignore[union-attr]
    w.pump.tick()
    assert w.lc.claim(call_id, gen(w, call_id)).op == "remove"


def test_a_removal_never_expires_and_never_counts_as_backlog(
        world: Callable[..., World]) -> None:
    w = world(max_age_s=60)
    call_id = w.add().call_id
    assert sent(w, call_id)
    w.lc.delivered(call_id, "901", 200, "EMERGENCY CALL ADDED ID: 901")
    w.clock.advance(3600)
    takebacks(w).remove(call_id)
    assert w.records.stats()["oldest_age_s"] is None
    w.pump.tick()
    assert w.lc.claim(call_id, gen(w, call_id)).kind == "claimed"


def test_a_late_answer_after_a_cancel_removes_the_call_from_the_cad(w: World) -> None:
    # Its lease ran out (verifying), the read-back did not find it, it was taken back...
    [call_id] = verifying(w)
    takebacks(w).remove(call_id)
    verifier = Verifier(w.r, w.settings, ListingCad([]), clock=w.clock,  # type: ignore[arg-type]
                        sleep=lambda s: None)
    verifier.run(*start(w))
    assert w.state(call_id) == "cancelled"
    # ...and then the first send's answer arrives after all: the CAD has it, so remove it.
    assert w.lc.delivered(call_id, "55", 200, "EMERGENCY CALL ADDED ID: 55") == "delivered"
    assert w.records.get(call_id).status == "removing"  # type: ignore[union-attr]


def test_taking_back_twice_answers_the_same_and_unknown_ids_are_refused(w: World) -> None:
    call_id = w.add().call_id
    tb = takebacks(w)
    assert tb.remove(call_id)[1] == "cancelled"
    assert tb.remove(call_id.lower())[1] == "cancelled"
    for bad in ("01J000000000000000000000ZZ", "12345", "not an id", ""):
        with pytest.raises(UnknownCall, match="no call has the id"):
            tb.remove(bad)
    assert resolve(w.r, w.keys, "12345") is None
    assert VERIFY_AFTER_S > 0
