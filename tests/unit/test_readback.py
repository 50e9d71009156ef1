"""The read-back (dispatcher.readback): matching the CAD's list, and settling verifying calls.

The CAD's list comes from a stand-in client here, so every answer shape and failure can be
given exactly; tests/integration and tests/chaos run the same path against the simulator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dispatcher.errors import Ambiguous, PermanentError, RateLimited, RetryableError
from dispatcher.policy import VERIFY_AFTER_S
from dispatcher.readback import (
    UNAVAILABLE_FOR_S,
    V1_INTERVAL_S,
    V2_INTERVAL_S,
    Candidate,
    Verifier,
    match,
)
from tests.unit.lifeworld import World


class ListingCad:
    """Answers `read_calls` with the next queued answer (a list, or an error to raise)."""

    def __init__(self, *answers: list[dict[str, Any]] | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[str | None] = []

    def read_calls(self, server: str | None) -> list[dict[str, Any]]:
        self.asked.append(server)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def listed(cad_id: int, call_id: str | None = None, caller: str = "Jane Doe",
           meta: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {"callId": cad_id, "isEmergency": True, "caller": caller,
                             "location": "Route 68", "description": "Crash"}
    if meta:
        entry["metaData"] = {"dispatcherCallId": call_id} if call_id else {"postal": "1"}
    return entry


# -- matching ------------------------------------------------------------------------------

def test_a_tag_matches_its_call_only() -> None:
    a = Candidate("A", {"caller": "Jane Doe", "location": "Route 68", "description": "Crash"})
    b = Candidate("B", dict(a.call))
    found = match([a, b], [listed(11, "B"), listed(12, "Z"), listed(13)], set())
    assert found == {"B": "11"}, "a tagged entry of another call, or an untagged one with " \
                                 "metaData, is not ours"


def test_without_metadata_the_fields_match_oldest_first_and_ours_are_not_taken_twice() -> None:
    fields = {"caller": "Jane Doe", "location": "Route 68", "description": "Crash"}
    old, new = Candidate("OLD", dict(fields)), Candidate("NEW", dict(fields))
    other = Candidate("OTHER", {**fields, "caller": "John"})
    entries = [listed(21, meta=False), listed(22, meta=False), listed(23, meta=False)]
    # 21 is already a delivered call of ours: two identical calls stay two calls.
    assert match([old, new, other], entries, taken={"21"}) == {"OLD": "22", "NEW": "23"}


@pytest.mark.parametrize("bad", [None, True, "", [], {"x": 1}])
def test_an_entry_without_a_usable_cad_id_is_ignored(bad: Any) -> None:
    c = Candidate("A", {"caller": "Jane Doe", "location": "Route 68", "description": "Crash"})
    assert match([c], [{**listed(1, "A"), "callId": bad}], set()) == {}


# -- settling --------------------------------------------------------------------------------

def verifying(w: World, n: int = 1) -> list[str]:
    """n calls sent, each with its answer lost: verifying."""
    ids = [w.add(caller=f"Caller {i}").call_id for i in range(n)]
    for call_id in ids:
        assert sent(w, call_id)
        assert w.lc.retry(call_id, gen(w, call_id), w.clock() + 1, "no answer", None, None,
                          ambiguous_on="") == "verifying"
    return ids


def gen(w: World, call_id: str) -> int:
    return int(w.field(call_id, "gen") or 0)


def sent(w: World, call_id: str) -> bool:
    """Claim the call for sending (released first if it waits in line)."""
    if w.state(call_id) == "held":
        w.pump.tick()
    return w.lc.claim(call_id, gen(w, call_id)).kind == "claimed"


@pytest.fixture
def verifier(world: Callable[..., World]) -> Callable[..., tuple[World, Verifier, ListingCad]]:
    def make(*answers: list[dict[str, Any]] | Exception, **settings: Any
             ) -> tuple[World, Verifier, ListingCad]:
        w = world(**settings)
        cad = ListingCad(*answers)
        sleeps: list[float] = []
        v = Verifier(w.r, w.settings, cad, clock=w.clock, sleep=sleeps.append)  # type: ignore[arg-type]
        return w, v, cad
    return make


def start(w: World) -> tuple[str, int, float]:
    """Let the read-back become due and have the schedule start it."""
    w.clock.advance(VERIFY_AFTER_S)
    assert w.pump.tick().readbacks == 1
    return w.publisher.readbacks.pop()


def test_found_is_delivered_with_the_cad_id_and_not_found_goes_back_in_line(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier()
    found, lost = verifying(w, 2)
    cad.answers.append([listed(501, found), listed(502, "someone-else")])
    server, gen, at = start(w)

    assert v.run(server, gen, at) == "settled"

    assert cad.asked == [None], "'' is the configured server"
    record = w.records.get(found)
    assert record is not None and (record.state, record.cad_call_id) == ("delivered", "501")
    assert w.r.get(w.keys.cad("501")) == found.encode(), "the CAD id leads back to our call"
    assert w.state(lost) == "held", "not in the CAD: sent again, in its place"
    assert "not in the CAD's list" in (w.field(lost, "last_error") or "")
    stats = w.records.stats()
    assert (stats["verifying"], stats["verified_found"], stats["verified_missing"]) == (0, 1, 1)
    # The call found is never sent again: its old message and any new one are stale.
    assert w.lc.claim(found, 1).kind == "stale"


def test_one_read_back_settles_every_verifying_call_of_the_server(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier()
    ids = verifying(w, 4)  # under the breaker's threshold: five lost answers open it
    cad.answers.append([listed(600 + i, call_id) for i, call_id in enumerate(ids)])
    assert v.run(*start(w)) == "settled"
    assert [w.state(i) for i in ids] == ["delivered"] * 4
    assert len(cad.asked) == 1
    assert w.pump.tick().readbacks == 0, "nothing left to verify"


def test_a_call_that_became_verifying_after_the_read_back_began_waits_for_the_next(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier(api_version=2)
    [first] = verifying(w)
    server, gen, at = start(w)
    [late] = verifying(w)  # its answer was lost after the read-back was started
    cad.answers.append([])
    assert v.run(server, gen, at) == "settled"
    assert w.state(first) == "held" and w.state(late) == "verifying"
    # v2's call list has its own budget: the next read-back waits for its interval.
    w.clock.advance(VERIFY_AFTER_S)
    assert w.pump.tick().readbacks == 0
    w.clock.advance(V2_INTERVAL_S)
    assert w.pump.tick().readbacks == 1


def test_a_failed_read_back_is_retried_with_backoff_and_counts_against_the_breaker(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier()
    [call_id] = verifying(w)
    failures_before = int(w.r.hget(f"{w.settings.prefix}:circuit", "failures") or 0)
    cad.answers += [Ambiguous("no answer from the CAD in time"), [listed(7, call_id)]]
    assert v.run(*start(w)) == "retry"
    assert w.state(call_id) == "verifying", "still unknown: never re-sent on a guess"
    assert int(w.r.hget(f"{w.settings.prefix}:circuit", "failures") or 0) == failures_before + 1
    assert w.pump.tick().readbacks == 0, "backoff"
    w.clock.advance(5)
    assert w.pump.tick().readbacks == 1
    assert v.run(*w.publisher.readbacks.pop()) == "settled"
    assert w.state(call_id) == "delivered"


def test_a_429_waits_as_asked_and_on_v1_pauses_every_sender(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier(max_rate=1.0)
    verifying(w)
    cad.answers.append(RateLimited("rate limited by the CAD (429)", status_code=429,
                                   retry_after=30))
    assert v.run(*start(w)) == "paused"
    assert w.records.stats()["rate_limit_pause_s"] == pytest.approx(30, abs=0.01)
    w.clock.advance(29)
    assert w.pump.tick().readbacks == 0
    w.clock.advance(2)
    assert w.pump.tick().readbacks == 1


def test_the_breaker_holds_read_backs_and_lets_one_probe(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier()
    [call_id] = verifying(w)
    w.r.hset(f"{w.settings.prefix}:circuit",
             mapping={"state": "open", "open_until": w.clock() + 60})
    w.clock.advance(VERIFY_AFTER_S)
    assert w.pump.tick().readbacks == 0, "the CAD looks down: no read-back"
    w.clock.advance(60)
    assert w.pump.tick().readbacks == 1, "the read-back is the breaker's probe"
    cad.answers.append([listed(9, call_id)])
    assert v.run(*w.publisher.readbacks.pop()) == "settled"
    assert w.records.stats()["circuit"] == "closed"


def test_no_read_back_falls_back_to_sending_again_and_counts_possible_duplicates(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier()
    ids = verifying(w, 2)
    cad.answers.append(PermanentError(
        "the CAD rejected the call list (400): API ENDPOINT IS NOT ENABLED FOR THIS COMMUNITY",
        status_code=400))
    assert v.run(*start(w)) == "unavailable"
    assert [w.state(i) for i in ids] == ["held", "held"]
    stats = w.records.stats()
    assert (stats["readback"], stats["possible_duplicates"]) == ("unavailable", 2)
    assert "NOT ENABLED" in (stats["readback_unavailable_reason"] or "")
    # From now on an unknown outcome is re-sent as before (and counted), until the
    # read-back is tried again.
    again = w.add().call_id
    assert sent(w, again)
    assert w.lc.retry(again, gen(w, again), w.clock() + 1, "lost", None, None,
                      ambiguous_on="") in ("scheduled", "held")
    assert w.records.stats()["possible_duplicates"] == 3
    w.clock.advance(UNAVAILABLE_FOR_S + 1)
    assert w.records.stats()["readback"] == "available"


def test_v1_read_backs_take_a_slot_of_the_shared_rate_limiter(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier(max_rate=1.0)
    verifying(w)
    w.clock.advance(10)  # the call's own slot is long past
    tat_before = float(w.r.hget(f"{w.settings.prefix}:rate", "tat") or 0)
    server, gen, at = start(w)
    assert float(w.r.hget(f"{w.settings.prefix}:rate", "tat") or 0) > max(tat_before, at)
    cad.answers.append([])
    began = w.clock()
    v.run(server, gen, at)
    next_at = float(w.r.hget(w.keys.readback_of(server), "next_at") or 0)
    assert next_at == began + V1_INTERVAL_S


def test_a_read_back_whose_lease_ran_out_is_stale_and_another_starts(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier()
    [call_id] = verifying(w)
    server, gen, at = start(w)
    w.clock.advance(w.settings.request_deadline_s + 16)  # its worker died
    assert w.pump.tick().readbacks == 1
    cad.answers.append([listed(5, call_id)])
    assert v.run(server, gen, at) == "stale"
    assert w.state(call_id) == "verifying"
    cad.answers.append([listed(5, call_id)])
    assert v.run(*w.publisher.readbacks.pop()) == "settled"
    assert w.state(call_id) == "delivered"


def test_a_late_delivery_outcome_still_wins_over_verifying(
        verifier: Callable[..., tuple[World, Verifier, ListingCad]]) -> None:
    w, v, cad = verifier()
    [call_id] = verifying(w)
    assert w.lc.delivered(call_id, "77", 200, "EMERGENCY CALL ADDED ID: 77") == "delivered"
    assert w.records.stats()["verifying"] == 0
    w.clock.advance(VERIFY_AFTER_S)
    assert w.pump.tick().readbacks == 0, "nothing left to verify"


def test_errors_are_retryable_subclasses() -> None:
    assert issubclass(Ambiguous, RetryableError)
