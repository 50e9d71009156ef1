"""dispatcher.ratelimit: the 429 pause, the slots, the calendar of grants and the gate."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from dispatcher import ratelimit
from dispatcher.policy import DEFAULT_RATE_LIMIT_PAUSE_S, MAX_SLOT_WAIT_S
from tests.unit.lifeworld import World

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
    assert b.kind == "held"
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
    w = world(ahead_s=MAX_SLOT_WAIT_S, max_rate=1.0)
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
    [(released, gen)] = w.publisher.published
    assert released == ids[3]
    claim = w.lc.claim(ids[3], gen)
    assert claim.kind == "claimed"
    assert w.clock() + claim.wait_s - starts[-1] >= 1.0


def test_messages_that_waited_past_their_slots_are_sent_in_line_order(
    world: Callable[..., World],
) -> None:
    # Five calls released with slots one interval apart; no worker takes them until long
    # after (a worker reconnecting to a restarted Redis), and then its threads claim them
    # in the wrong order. The first stale claim re-slots the line; order is kept.
    w = world(ahead_s=MAX_SLOT_WAIT_S, max_rate=2.0)
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
    w = world(ahead_s=MAX_SLOT_WAIT_S, max_rate=1.0)
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
    w = world(ahead_s=MAX_SLOT_WAIT_S, max_rate=rng.choice([1.0, 2.0, 5.0, 10.0]))
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
    w = world(ahead_s=MAX_SLOT_WAIT_S, max_rate=2.0)
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


# -- the send gate -------------------------------------------------------------------------


def test_the_gate_spaces_sends_by_the_interval_and_stops_for_a_pause(
    world: Callable[..., World],
) -> None:
    w = world(max_rate=2.0)
    gate = w.lc.rate
    gap = w.lc.flow.send_gap_s
    assert gap > 0.5, "the interval carries its margin over 1/rate"

    assert gate.gate() == "go"
    w.clock.advance(0.1)
    assert gate.gate() == pytest.approx(gap - 0.1)
    w.clock.advance(gap)
    assert gate.gate() == "go"
    assert ratelimit.paused_until(w.r, w.settings.prefix) == 0.0
    w.r.hset(w.keys.rate, "pause_until", w.clock() + 30)
    assert gate.gate() == "paused"
    assert ratelimit.paused_until(w.r, w.settings.prefix) == w.clock() + 30


# -- the send gate, spaced by departures ---------------------------------------------------


def test_the_gate_spaces_sends_from_when_the_last_one_left(
    world: Callable[..., World],
) -> None:
    # A sender descheduled between its "go" and its bytes leaving: the next "go" is
    # measured from the reported departure, not from the late sender's "go".
    w = world(max_rate=1.0)
    gate, flow = w.lc.rate, w.lc.flow
    gap, tol = flow.send_gap_s, flow.tolerance_s
    assert flow.limit_gap_s < gap < flow.interval_s < flow.limit_gap_s * 1.01
    assert tol == pytest.approx((gap - flow.limit_gap_s) * ratelimit.TOLERANCE_MARGINS)

    assert gate.gate(report=True) == "go"
    w.clock.advance(0.3)  # descheduled: the request leaves 0.3 s after its "go"
    assert gate.sent() == pytest.approx(0.3)
    assert gate.sent() is None, "one report per go"
    w.clock.advance(gap - 0.3)
    assert gate.gate(report=True) == pytest.approx(0.3 - tol)
    w.clock.advance(0.3 - tol + 1e-6)  # (times are kept to the microsecond)
    assert gate.gate(report=True) == "go"


def test_a_go_a_little_late_costs_no_pace(world: Callable[..., World]) -> None:
    # Threads waking a few ms late, requests leaving a ms after their "go": the sends
    # keep the schedule (one gap apart on average).
    w = world(max_rate=2.0)
    gate, flow = w.lc.rate, w.lc.flow
    gos = []
    for i in range(100):
        verdict = gate.gate(report=True)
        while verdict != "go":
            assert isinstance(verdict, float)
            w.clock.advance(verdict + (0.002 if i % 3 else 0.0005))  # woke late
            verdict = gate.gate(report=True)
        gos.append(w.clock())
        w.clock.advance(0.001)
        gate.sent()
    gaps = [b - a for a, b in zip(gos[:-1], gos[1:], strict=True)]
    assert min(gaps) > flow.send_gap_s - flow.tolerance_s
    assert (gos[-1] - gos[0]) / len(gaps) == pytest.approx(flow.send_gap_s, abs=1e-4)


def test_the_next_go_waits_for_the_departure_report(world: Callable[..., World]) -> None:
    w = world(max_rate=1.0)
    gate, flow = w.lc.rate, w.lc.flow

    assert gate.gate(report=True) == "go"
    w.clock.advance(flow.send_gap_s + 0.5)  # still not gone: no "go" for anyone else
    wait = gate.gate(report=True)
    assert isinstance(wait, float) and 0 < wait <= flow.send_gap_s / 20 + 1e-9, "a poll"
    assert w.r.hget(w.keys.rate, "sent_pending") is not None
    gate.sent()  # (the same thread; the report clears the wait whoever asks next)
    assert w.r.hget(w.keys.rate, "sent_pending") is None
    assert gate.gate(report=True) == pytest.approx(flow.send_gap_s - flow.tolerance_s)
    w.clock.advance(flow.send_gap_s - flow.tolerance_s)
    assert gate.gate(report=True) == "go"


def test_a_go_never_reported_counts_as_gone_after_the_timeout(
    world: Callable[..., World],
) -> None:
    # Its worker died between "go" and send: the gate waits the timeout, no longer.
    w = world(max_rate=1.0)
    gate, flow = w.lc.rate, w.lc.flow
    assert flow.report_timeout_s == w.settings.connect_timeout_s + ratelimit.REPORT_GRACE_S

    assert gate.gate(report=True) == "go"
    gate._local.stamp = None  # the reporting thread is gone
    w.clock.advance(flow.report_timeout_s - 0.01)
    assert isinstance(gate.gate(report=True), float)
    w.clock.advance(0.01)
    assert gate.gate(report=True) == pytest.approx(flow.send_gap_s - flow.tolerance_s)
    w.clock.advance(flow.send_gap_s)
    assert gate.gate(report=True) == "go"


def _arrivals(world: World, report: bool, delays: list[float], senders: int) -> list[float]:
    """Several senders through the gate on a simulated clock: each asks, sleeps the
    answer, and on "go" writes its request ``delay`` later (reporting it just after)."""
    gate, clock = world.lc.rate, world.clock
    stamps: dict[int, str | None] = {}
    events = [(clock() + i * 0.0001, i, "ask") for i in range(senders)]
    arrivals: list[float] = []
    todo = list(delays)
    while todo or any(kind == "left" for _, _, kind in events):
        events.sort()
        at, who, kind = events.pop(0)
        clock.now = max(clock.now, at)
        gate._local.stamp = stamps.get(who)
        if kind == "left":
            arrivals.append(at)
            clock.now = at + 0.0002  # the report follows the bytes out
            if report:
                gate.sent()
            events.append((clock(), who, "ask"))
        elif todo:
            verdict = gate.gate(report=report)
            if verdict == "go":
                events.append((clock() + todo.pop(0), who, "left"))
            else:
                assert isinstance(verdict, float)
                events.append((clock() + verdict + 0.0001, who, "ask"))
        stamps[who] = gate._local.stamp
    return sorted(arrivals)


def _most_in_window(arrivals: list[float], window_s: float) -> int:
    """The most arrivals a CAD counting a sliding window (simulator: t > now - window)
    sees at once."""
    return max(sum(1 for b in arrivals if a - window_s < b <= a) for a in arrivals)


@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_late_departures_never_overfill_a_sliding_window(
    world: Callable[..., World], rate: float,
) -> None:
    # The CAD's limit is rate x 10 requests in any 10 s. Most requests leave 1 ms after
    # their "go"; now and then a thread is descheduled for up to 2 s before its bytes
    # leave (a loaded machine). Spaced by the "go"s (no reports) the late ones land in
    # a window already full; spaced by the departures, never.
    rng = random.Random(7)
    delays = [rng.choice([0.3, 0.6, 1.2, 2.0]) if rng.random() < 0.1 else 0.001
              for _ in range(150)]
    limit = int(rate * 10)

    w = world(max_rate=rate)
    by_departure = _arrivals(w, True, delays, senders=8)
    assert len(by_departure) == len(delays)
    for k in (3, 5, limit):  # every sliding window of 3 or more requests at the rate
        assert _most_in_window(by_departure, k / rate) <= k
    spacing = (by_departure[-1] - by_departure[0]) / (len(by_departure) - 1)
    # The late ones cost their lateness (and a poll for their report), nothing more.
    assert spacing < (w.lc.flow.send_gap_s + sum(delays) / len(delays)) * 1.05

    w.r.delete(w.keys.rate)
    by_go = _arrivals(w, False, delays, senders=8)
    assert _most_in_window(by_go, 10.0) > limit, "the old spacing overfills a window"
