"""workers.tasks: the deliver task takes a message of either shape (an upgrade keeps the
messages already in flight)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest

from dispatcher.call import Call


@pytest.fixture
def tasks(monkeypatch: pytest.MonkeyPatch, redis_base_url: str) -> ModuleType:
    monkeypatch.setenv("REDIS_URL", redis_base_url)
    monkeypatch.setenv("SONORAN_COMMUNITY_ID", "unit-community")
    monkeypatch.setenv("SONORAN_API_KEY", "UNIT-api-key-7f3c9d1e5b")
    return importlib.import_module("workers.tasks")


class Seen:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def deliver(self, call_id: str, gen: int) -> str:
        self.calls.append((call_id, gen))
        return "delivered"


def test_deliver_takes_the_id_or_the_whole_envelope_of_older_messages(
        tasks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Seen()
    served: list[str] = []
    monkeypatch.setattr(tasks, "deliverer", lambda community: served.append(community) or seen)
    old = Call.create(caller="A", location="B", description="C").with_envelope("01OLD", 1.0)

    assert tasks.deliver.run("01NEW", 2) == "delivered"
    assert tasks.deliver.run(old.to_dict(), "3") == "delivered"

    assert tasks.deliver.run("01NORTH", 4, "north") == "delivered"

    assert seen.calls == [("01NEW", 2), ("01OLD", 3), ("01NORTH", 4)]
    assert served == ["", "", "north"]  # a third argument names the call's community
