"""dispatcher.circuit: the shared breaker opens, probes and closes (through the scripts)."""

from __future__ import annotations

from collections.abc import Callable

from dispatcher import circuit
from dispatcher.policy import CIRCUIT_FAILURE_THRESHOLD
from tests.unit.lifeworld import World

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
    assert opened.kind == "held"
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
    [(released, gen)] = w.publisher.published
    probe = released
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


def test_a_failed_probe_reopens_with_a_longer_cooldown_up_to_the_max(
        world: Callable[..., World]) -> None:
    w = world(circuit_max_cooldown_s=60.0)  # an operator who wants the breaker to back off
    ids = [w.add().call_id for _ in range(CIRCUIT_FAILURE_THRESHOLD + 1)]
    w.publisher.published.clear()
    for call_id in ids[:CIRCUIT_FAILURE_THRESHOLD]:
        _fail(w, call_id, 1)
    assert w.lc.claim(ids[-1], 1).kind == "held"
    w.add("waits behind the probe")
    w.clock.advance(w.lc.circuit.cooldown_s)
    w.pump.tick()
    [(released, gen)] = w.publisher.published
    w.publisher.published.clear()

    _fail(w, released, gen)

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


# -- reading the hash ----------------------------------------------------------------------


def test_the_view_shows_an_open_breaker_past_its_cooldown_as_half_open(
    world: Callable[..., World],
) -> None:
    w = world()
    now = w.clock()
    assert circuit.read(w.r, w.settings.prefix, now).state == "closed"
    w.r.hset(w.keys.circuit, mapping={"state": "open", "open_until": now + 5, "failures": 5,
                                      "last_error": "timeout", "last_failure_at": now})

    still = circuit.read(w.r, w.settings.prefix, now)
    over = circuit.read(w.r, w.settings.prefix, now + 5)

    assert (still.state, still.failures, still.last_error) == ("open", 5, "timeout")
    assert still.last_failure_at == now and still.last_success_at is None
    assert over.state == "half_open"


def test_by_default_the_probes_keep_a_steady_cadence(world: Callable[..., World]) -> None:
    # The default max cooldown is the cooldown: a failed probe reopens for the same 2 s,
    # so a CAD that answers again gets the next probe within that, however long it was down.
    w = world()
    ids = [w.add().call_id for _ in range(CIRCUIT_FAILURE_THRESHOLD + 1)]
    w.publisher.published.clear()
    for call_id in ids[:CIRCUIT_FAILURE_THRESHOLD]:
        _fail(w, call_id, 1)
    assert w.lc.claim(ids[-1], 1).kind == "held"  # its message finds the breaker open
    for _ in range(5):  # five failed probes in a row
        w.clock.advance(w.lc.circuit.cooldown_s)
        assert w.pump.tick().released == 1
        [(released, gen)] = w.publisher.published
        w.publisher.published.clear()
        _fail(w, released, gen)
        assert w.records.stats()["circuit"] == "open"
    assert w.lc.circuit.cooldown_s == w.lc.circuit.max_cooldown_s == 2.0
