"""dispatcher.deadletters: list, show, replay, purge and invalid entries."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from dispatcher.deadletters import SUMMARY_HASHES_KEEP, DeadLetters, Filter
from dispatcher.records import Records
from tests.unit.lifeworld import World

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
    [(released, gen)] = w.publisher.published[-1:]
    assert released == call_id
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


# -- invalid-entry cap -------------------------------------------------------------------


def test_invalid_entries_beyond_the_cap_are_summarised(
        r: fakeredis.FakeRedis, clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    dead = DeadLetters(r, clock=clock, max_invalid=3)
    ids = []
    for i in range(5):
        ids.append(dead.bury_invalid(f"junk {i}", "not JSON", "inbox"))
        clock.advance(1)

    assert [r.exists(f"dispatcher:call:{i}") for i in ids] == [0, 0, 1, 1, 1]
    assert r.zcard("dispatcher:dead") == 3
    summary = dead.invalid_summary(hashes=10)
    assert summary["count"] == 2
    assert summary["oldest_at"] < summary["newest_at"]  # type: ignore[operator]
    assert summary["sha256"] == [hashlib.sha256(f"junk {i}".encode()).hexdigest()
                                 for i in (1, 0)]
    stats = Records(r).stats()
    assert stats["invalid_summarised"] == 2 and stats["dead"] == 3
    assert len([m for m in caplog.messages if "DISPATCHER_MAX_INVALID" in m]) == 1


def test_other_dead_letters_are_never_summarised(
        world: Callable[..., World], r: fakeredis.FakeRedis, clock: Any) -> None:
    w = world()
    call_id = w.add().call_id
    w.lc.claim(call_id, 1)
    w.lc.dead(call_id, 1, "rejected", 400, "bad key", "rejected")
    dead = DeadLetters(r, clock=clock, max_invalid=1)
    for i in range(3):
        dead.bury_invalid(f"junk {i}", "not JSON", "inbox")

    assert dead.get(call_id) is not None
    assert dead.invalid_summary()["count"] == 2


def test_the_hash_list_is_bounded(r: fakeredis.FakeRedis, clock: Any) -> None:
    dead = DeadLetters(r, clock=clock, max_invalid=1)
    for i in range(SUMMARY_HASHES_KEEP + 5):
        dead.bury_invalid(f"j{i}", "bad", "inbox")
    assert r.llen("dispatcher:invalid:hashes") == SUMMARY_HASHES_KEEP
    assert dead.invalid_summary()["count"] == SUMMARY_HASHES_KEEP + 4


def test_a_purged_invalid_entry_is_not_summarised_later(
        r: fakeredis.FakeRedis, clock: Any) -> None:
    dead = DeadLetters(r, clock=clock, max_invalid=2)
    first = dead.bury_invalid("junk 0", "bad", "inbox")
    assert dead.purge(first)
    dead.bury_invalid("junk 1", "bad", "inbox")
    dead.bury_invalid("junk 2", "bad", "inbox")
    assert dead.invalid_summary()["count"] == 0
