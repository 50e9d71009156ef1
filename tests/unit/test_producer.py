"""dispatcher.producer: idempotency and the backlog cap (DISPATCHER_MAX_BACKLOG)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dispatcher.bridge import Bridge
from dispatcher.call import Call
from dispatcher.errors import InvalidCall, QueueFull, QueueUnavailable
from dispatcher.producer import Producer, enqueue_call
from dispatcher.records import Records
from dispatcher.settings import Secret, Settings
from dispatcher.spool import Spool

INBOX = "dispatcher:inbox"


def _settings(**overrides: Any) -> Settings:
    return Settings(**{"community_id": "c", "api_key": Secret("quota-key-123456"),
                       "max_rate": 0.0, **overrides})


def _call(i: int, key: str | None = None) -> Call:
    return Call.create(caller=f"Caller {i}", location="Route 68", description="Crash",
                       idempotency_key=key)


def _producer(r: fakeredis.FakeRedis, clock: Any, publisher: Any, **overrides: Any) -> Producer:
    return Producer(_settings(**overrides), client=r, publisher=publisher, clock=clock,
                    wait_s=0.2)


def _waiting(r: fakeredis.FakeRedis) -> int:
    return int(r.zcard("dispatcher:pending"))


# -- idempotency -------------------------------------------------------------------------


def test_the_producer_api_honours_idempotency(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> None:
    producer = _producer(r, clock, publisher)
    call = Call.create(caller="A", location="B", description="C", idempotency_key="k1")

    ids = {producer.enqueue(call) for _ in range(3)}

    assert len(ids) == 1
    assert len(publisher.published) == 1


def test_the_python_api_keeps_extras_and_refuses_the_key_in_one(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> None:
    producer = _producer(r, clock, publisher)
    call_id = enqueue_call("A", "B", "C", extra={"coords": {"x": 1.5}, "deleteAfter": 9},
                           producer=producer)

    [record] = Records(r).get_many([call_id])
    assert record.call["coords"] == {"x": 1.5} and record.call["deleteAfterMinutes"] == 9
    with pytest.raises(InvalidCall, match="API key"):
        enqueue_call("A", "B", "C", extra={"auth": ["quota-key-123456"]}, producer=producer)
    assert len(publisher.published) == 1


# -- backlog cap ---------------------------------------------------------------------------


def test_the_cap_refuses_new_calls_and_touches_nothing_accepted(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> None:
    producer = _producer(r, clock, publisher, max_backlog=3)
    ids = [producer.enqueue(_call(i)) for i in range(3)]
    before = {i: r.hgetall(f"dispatcher:call:{i}") for i in ids}

    with pytest.raises(QueueFull) as caught:
        producer.enqueue(_call(3))

    message = str(caught.value)
    assert "DISPATCHER_MAX_BACKLOG" in message and "3" in message and "\n" not in message
    assert not isinstance(caught.value, QueueUnavailable)
    assert _waiting(r) == 3
    assert {i: r.hgetall(f"dispatcher:call:{i}") for i in ids} == before
    assert Records(r).stats()["enqueued"] == 3


def test_an_idempotent_re_enqueue_at_the_cap_returns_its_id(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> None:
    producer = _producer(r, clock, publisher, max_backlog=2)
    first = producer.enqueue(_call(0, key="order-66"))
    producer.enqueue(_call(1))

    assert producer.enqueue(_call(0, key="order-66")) == first
    with pytest.raises(QueueFull):
        producer.enqueue(_call(2, key="order-67"))
    assert r.get("dispatcher:idem:order-67") is None  # nothing half-recorded


def test_zero_means_no_cap(r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> None:
    producer = _producer(r, clock, publisher, max_backlog=0)
    for i in range(50):
        producer.enqueue(_call(i))
    assert _waiting(r) == 50


def test_delivered_and_dead_calls_free_room(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> None:
    producer = _producer(r, clock, publisher, max_backlog=2)
    a = producer.enqueue(_call(0))
    producer.enqueue(_call(1))
    with pytest.raises(QueueFull):
        producer.enqueue(_call(2))

    producer.lifecycle.delivered(a, "cad-1", 200, "ok")

    assert producer.enqueue(_call(2))


def test_enqueue_many_records_up_to_the_cap_and_says_which(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> None:
    producer = _producer(r, clock, publisher, max_backlog=3)
    producer.enqueue(_call(0))

    with pytest.raises(QueueFull) as caught:
        producer.enqueue_many([_call(i) for i in range(1, 5)])

    accepted = caught.value.accepted  # type: ignore[attr-defined]
    assert [bool(i) for i in accepted] == [True, True, False, False]
    assert _waiting(r) == 3


def test_a_batch_refused_at_the_cap_stays_refused_when_room_frees_mid_batch(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> None:
    """The calls of a batch run as separate scripts: a delivery between two of them must
    not let a later call in after an earlier one was refused (it would jump the line)."""
    producer = _producer(r, clock, publisher, max_backlog=1)
    first = producer.enqueue(_call(0))
    life, batch = producer.lifecycle, producer.lifecycle.keys.batch("b-1")

    def one(i: int) -> str:
        pipe = r.pipeline(transaction=False)
        life.enqueue_pipelined(pipe, _call(i).with_envelope(f"id-{i}", clock()),
                               ("dispatcher", "{}"), "inbox", None, batch)
        return life.enqueued_from(pipe.execute()[0]).call_id

    assert one(1) == "", "refused at the cap"
    life.delivered(first, "cad-1", 200, "ok")  # room frees between two calls of the batch
    assert one(2) == "", "the batch stays refused"
    assert producer.enqueue(_call(3)), "a call outside the batch takes the room"
    assert r.pttl(batch) > 0


def test_a_refused_inbox_entry_stays_in_its_processing_list(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any) -> None:
    producer = _producer(r, clock, publisher, max_backlog=1)
    producer.enqueue(_call(0))
    raw = json.dumps({"caller": "a", "location": "b", "description": "c"})
    r.lpush(f"{INBOX}:processing", raw)

    with pytest.raises(QueueFull):
        producer.enqueue(Call.create(caller="a", location="b", description="c"), "inbox",
                         take_from=(f"{INBOX}:processing", raw))

    assert r.lrange(f"{INBOX}:processing", 0, -1) == [raw.encode()]


def test_the_bridge_leaves_refused_entries_in_the_inbox_in_order(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    producer = _producer(r, clock, publisher, max_backlog=2)
    bridge = Bridge(producer, INBOX)
    entries = [json.dumps({"caller": f"c{i}", "location": "l", "description": "d"})
               for i in range(5)]
    for e in entries:
        r.lpush(INBOX, e)

    with pytest.raises(QueueFull):
        bridge.step(block_s=0.01)
    bridge._queue_full(QueueFull("full"))  # as run() does, twice: one log line
    bridge._queue_full(QueueFull("full"))
    bridge.recover(quiet=True)

    assert _waiting(r) == 2
    assert r.zcard("dispatcher:dead") == 0
    left = [v.decode() for v in reversed(r.lrange(INBOX, 0, -1))]  # oldest first
    assert left == entries[2:]
    assert r.llen(f"{INBOX}:processing") == 0
    assert len([m for m in caplog.messages if "full" in m]) == 1


def test_the_spool_never_takes_a_call_refused_for_the_cap(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any, tmp_path: Path) -> None:
    producer = _producer(r, clock, publisher, max_backlog=1, spool_dir=str(tmp_path))
    producer.enqueue(_call(0))

    with pytest.raises(QueueFull):
        producer.enqueue(_call(1))

    assert producer.pending_spooled() == 0
    producer.close()


def test_the_flusher_keeps_spooled_calls_while_the_cap_is_reached(
        r: fakeredis.FakeRedis, clock: Any, publisher: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    producer = _producer(r, clock, publisher, max_backlog=1)
    first = producer.enqueue(_call(0))
    spool = Spool(tmp_path)
    stamped = _call(1).with_envelope("01SPOOLEDCALL0000000000000", clock())
    spool.push({"call": {**stamped.to_dict(), "idempotency_key": "spool:x"}, "source": "api"})
    spooling = _producer(r, clock, publisher, max_backlog=1, spool_dir=str(tmp_path))
    assert spooling.flusher is not None
    spooling.flusher.stop(wait_s=10)  # drive it by hand below

    with pytest.raises(QueueFull):
        spooling.flusher.flush_once()
    spooling._flush_error(QueueFull("the queue is full"))
    spooling._flush_error(QueueFull("the queue is full"))

    assert spooling.pending_spooled() == 1
    with pytest.raises(QueueFull):  # not spooled behind it: that would go round the cap
        spooling.enqueue(_call(2))
    assert spooling.pending_spooled() == 1
    assert len([m for m in caplog.messages if "spool flush waits" in m]) == 1

    producer.lifecycle.delivered(first, "cad-1", 200, "ok")
    assert spooling.flusher.flush_once() == 1
    assert spooling.pending_spooled() == 0
    assert r.exists("dispatcher:call:01SPOOLEDCALL0000000000000")


@pytest.fixture(autouse=True)
def _warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
