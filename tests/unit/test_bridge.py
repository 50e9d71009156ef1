"""dispatcher.bridge: inbox entries become calls or dead letters, and none is lost or blocks."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest

from dispatcher.bridge import MAX_ENTRY_BYTES, Bridge, parse_entry
from dispatcher.deadletters import DeadLetters, Filter
from dispatcher.errors import InvalidCall
from dispatcher.producer import Producer
from dispatcher.records import CallRecord, Records
from dispatcher.settings import Secret, Settings
from tests.conftest import SEED_CALL

INBOX = "dispatcher:inbox"

FLAT: dict[str, Any] = {
    "caller": "John Roe",
    "location": "Alta St",
    "description": "Noise complaint",
    "postal": "7015a",
    "isEmergency": False,
}


@dataclass
class Inbox:
    r: fakeredis.FakeRedis
    bridge: Bridge
    records: Records
    dead: DeadLetters
    publisher: Any
    clock: Any

    def push(self, *entries: bytes | str | dict[str, Any]) -> None:
        for entry in entries:
            raw = json.dumps(entry) if isinstance(entry, dict) else entry
            self.r.lpush(INBOX, raw)

    def run(self) -> int:
        """Run the bridge until the inbox is empty; returns the entries it handled."""
        before = self.bridge.moved + self.bridge.invalid
        while self.bridge.step(block_s=0.01):
            self.clock.advance(1.0)
        return self.bridge.moved + self.bridge.invalid - before

    def calls(self) -> list[CallRecord]:
        members: Any = self.r.zrange("dispatcher:pending", 0, -1)
        ids = [i.decode() for i in members]
        return self.records.get_many(ids)

    def lists_empty(self) -> bool:
        return self.r.llen(INBOX) == 0 and self.r.llen(f"{INBOX}:processing") == 0


@pytest.fixture
def inbox(
    r: fakeredis.FakeRedis, clock: Any, publisher: Any, api_key: str
) -> Callable[..., Inbox]:
    def build(**overrides: Any) -> Inbox:
        settings = Settings(**{"community_id": "c", "api_key": Secret(api_key), "max_rate": 0.0,
                               **overrides})
        producer = Producer(settings, client=r, publisher=publisher, clock=clock)
        return Inbox(r, Bridge(producer, settings.inbox_key), Records(r, clock=clock),
                     DeadLetters(r, clock=clock), publisher, clock)

    return build


def test_flat_and_seed_entries_are_enqueued_in_order(inbox: Callable[..., Inbox]) -> None:
    box = inbox()
    box.push(SEED_CALL, FLAT)

    assert box.run() == 2

    assert box.lists_empty()
    calls = box.calls()
    assert [c.call["caller"] for c in calls] == ["Jane Doe", "John Roe"]
    assert calls[0].call == SEED_CALL
    assert calls[1].call["metaData"] == {"postal": "7015a"}
    assert {c.source for c in calls} == {"inbox"}
    assert [call_id for call_id, _ in box.publisher.published] == [c.id for c in calls]
    assert box.bridge.moved == 2 and box.bridge.invalid == 0


def test_unknown_members_of_an_entry_are_kept_for_the_cad(inbox: Callable[..., Inbox]) -> None:
    box = inbox()
    coords = {"x": 215.3, "y": -810.1, "z": 30.7}
    box.push({**SEED_CALL, "coords": coords, "deleteAfter": 10, "futureField": [1, "a"]})

    assert box.run() == 1

    [record] = box.calls()
    assert record.call["coords"] == coords and record.call["futureField"] == [1, "a"]
    assert record.call["deleteAfterMinutes"] == 10 and "deleteAfter" not in record.call


def test_the_api_key_in_an_unknown_member_is_refused(
    inbox: Callable[..., Inbox], api_key: str, leak_scan: Callable[..., list[bytes]],
    r: fakeredis.FakeRedis,
) -> None:
    box = inbox()
    box.push({**SEED_CALL, "auth": {"key": api_key}})

    box.run()

    assert box.dead.count() == 1 and box.calls() == []
    assert leak_scan(r) == []


def test_an_idempotency_key_in_the_inbox_is_honoured(inbox: Callable[..., Inbox]) -> None:
    box = inbox()
    box.push({**FLAT, "idempotencyKey": "fivem-1"}, {**FLAT, "idempotencyKey": "fivem-1"})

    box.run()

    assert len(box.calls()) == 1
    assert box.lists_empty()


INVALID: dict[str, bytes] = {
    "not-json": b'{"caller": "Jane", oops',
    "json-array": json.dumps([SEED_CALL]).encode(),
    "json-string": b'"call 911"',
    "missing-caller": json.dumps({k: v for k, v in FLAT.items() if k != "caller"}).encode(),
    "extra-name-too-long": json.dumps({**FLAT, "n" * 65: 1}).encode(),
    "too-large": json.dumps({**FLAT, "description": "x" * (MAX_ENTRY_BYTES + 10)}).encode(),
    "not-utf8": b'{"caller": "\xff\xfe", "location": "l", "description": "d"}',
    "empty": b"",
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_entry_becomes_a_dead_letter_and_does_not_block(
    inbox: Callable[..., Inbox], case: str
) -> None:
    box = inbox()
    raw = INVALID[case]
    box.push(raw, FLAT)

    assert box.run() == 2

    assert box.lists_empty()
    [record] = box.dead.list(Filter(reason="invalid"))
    assert record.source == "inbox"
    assert record.last_error
    kept = box.dead.raw(record.id) or ""
    if case == "not-utf8":
        assert kept == raw.decode("utf-8", errors="replace")
    elif case == "empty":
        assert kept == ""
    else:
        assert raw.decode()[: len(kept)] == kept and kept
    assert [c.call["caller"] for c in box.calls()] == ["John Roe"]
    assert box.bridge.invalid == 1 and box.bridge.moved == 1


def test_the_dead_letter_names_the_problem(inbox: Callable[..., Inbox]) -> None:
    box = inbox()
    box.push(INVALID["missing-caller"])

    box.run()

    [record] = box.dead.list()
    assert record.last_error is not None and "caller" in record.last_error


@pytest.mark.parametrize(
    ("raw", "field"),
    [(json.dumps({**FLAT, "caller": ""}).encode(), "caller"),
     (json.dumps({**FLAT, "isEmergency": "yes"}).encode(), "isEmergency")],
)
def test_parse_entry_names_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidCall) as info:
        parse_entry(raw)
    assert info.value.field == field


POISON: dict[str, bytes] = {
    "deeply-nested-json": b"[" * 50_000,
    "lone-surrogate": b'{"caller": "\\ud800", "location": "l", "description": "d"}',
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_a_poison_entry_becomes_a_dead_letter_and_does_not_block(
    inbox: Callable[..., Inbox], case: str
) -> None:
    box = inbox()
    box.push(POISON[case], FLAT)

    box.run()

    assert box.lists_empty()
    assert len(box.dead.list(Filter(reason="invalid"))) == 1
    assert [c.call["caller"] for c in box.calls()] == ["John Roe"]


def test_an_invalid_entry_never_stores_the_api_key(
    inbox: Callable[..., Inbox], api_key: str, leak_scan: Callable[..., list[bytes]],
    r: fakeredis.FakeRedis,
) -> None:
    box = inbox()
    box.push({"id": "c", "key": api_key, "type": "CALL_911", "data": [SEED_CALL]})

    box.run()

    assert box.dead.count() == 1
    assert leak_scan(r) == []


def test_recover_returns_leftovers_to_the_inbox_head_in_order(
    inbox: Callable[..., Inbox], r: fakeredis.FakeRedis
) -> None:
    box = inbox()
    box.push({**FLAT, "caller": "first"}, {**FLAT, "caller": "second"},
             {**FLAT, "caller": "third"})
    # A bridge took two entries and died before recording them.
    for _ in range(2):
        r.lmove(INBOX, f"{INBOX}:processing", "RIGHT", "LEFT")
    assert r.llen(f"{INBOX}:processing") == 2

    assert box.bridge.recover() == 2
    assert r.llen(f"{INBOX}:processing") == 0
    assert box.bridge.recover() == 0

    box.run()
    assert [c.call["caller"] for c in box.calls()] == ["first", "second", "third"]
    assert box.lists_empty()


def test_an_entry_another_bridge_already_took_is_not_recorded_twice(
    inbox: Callable[..., Inbox], r: fakeredis.FakeRedis
) -> None:
    box = inbox()
    raw = json.dumps(FLAT).encode()

    box.bridge.handle_many([raw])  # not in the processing list: someone else recorded it

    assert box.calls() == []
    assert box.dead.count() == 0
    assert box.publisher.published == []


def test_an_empty_inbox_steps_false(inbox: Callable[..., Inbox]) -> None:
    assert inbox().bridge.step(block_s=0.01) is False


def test_the_configured_inbox_key_is_used(
    inbox: Callable[..., Inbox], r: fakeredis.FakeRedis
) -> None:
    box = inbox(inbox_key="game:911")
    r.lpush("game:911", json.dumps(FLAT))

    assert box.bridge.step(block_s=0.01) is True
    assert r.llen("game:911") == 0 and r.llen("game:911:processing") == 0
    assert len(box.calls()) == 1


def test_junk_entries_are_logged_once_a_minute_with_a_count() -> None:
    from dispatcher.bridge import FULL_LOG_EVERY_S, _OncePerMinute

    now = [100.0]
    gate = _OncePerMinute(clock=lambda: now[0])
    assert gate.due() == 0, "the first is logged"
    assert [gate.due() for _ in range(5)] == [None] * 5
    now[0] += FULL_LOG_EVERY_S
    assert gate.due() == 5, "then one line a minute, with the count of the others"
    assert gate.due() is None
