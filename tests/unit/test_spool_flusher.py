"""dispatcher.spool: the local spool keeps calls in order on disk; the flusher moves them
to Redis oldest first and keeps what Redis did not take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dispatcher import spool as spool_module
from dispatcher.spool import Flusher, Spool


class Sink:
    """Stands in for the producer's record: fails ``fail`` times, then takes entries."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.taken: list[str] = []

    def __call__(self, envelope: dict[str, Any]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("Redis down")
        self.taken.append(envelope["id"])


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool")
    for name in ("a", "b", "c"):
        s.push({"id": name})
    return s


def test_the_spool_keeps_order_and_survives_reopening(spool: Spool, tmp_path: Path) -> None:
    spool.remove(spool.peek(1)[0][0])
    spool.close()
    again = Spool(tmp_path / "spool")
    assert [e["id"] for _, e in again.peek()] == ["b", "c"] and len(again) == 2


def test_flush_once_sends_oldest_first_and_empties_the_spool(spool: Spool) -> None:
    sink = Sink()
    assert Flusher(spool, sink, lambda exc: None).flush_once() == 3
    assert sink.taken == ["a", "b", "c"] and len(spool) == 0


def test_a_failed_send_keeps_that_entry_and_the_ones_behind_it(spool: Spool) -> None:
    sink = Sink()
    sink_calls = iter([None, ConnectionError("down")])

    def send(envelope: dict[str, Any]) -> None:
        outcome = next(sink_calls, None)
        if outcome is not None:
            raise outcome
        sink(envelope)

    with pytest.raises(ConnectionError):
        Flusher(spool, send, lambda exc: None).flush_once()
    assert sink.taken == ["a"]
    assert [e["id"] for _, e in spool.peek()] == ["b", "c"]


def test_the_flusher_thread_retries_until_redis_takes_everything(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "FLUSH_RETRY_S", 0.0)
    sink = Sink(fail=2)
    errors: list[Exception] = []
    flusher = Flusher(spool, sink, errors.append)

    flusher.kick()
    flusher.kick()  # a second kick while running starts no second thread

    assert flusher.wait(30)
    assert sink.taken == ["a", "b", "c"] and len(spool) == 0
    assert [type(e) for e in errors] == [ConnectionError, ConnectionError]


def test_a_stopped_flusher_leaves_the_spool_as_it_is(spool: Spool) -> None:
    flusher = Flusher(spool, Sink(fail=10**6), lambda exc: None)
    flusher.kick()
    flusher.stop(wait_s=30)
    assert flusher.wait(0) and len(spool) == 3
