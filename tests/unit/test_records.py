"""dispatcher.records: the stats of the contract."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.lifeworld import World

# -- stats -------------------------------------------------------------------------------


def test_stats_have_the_contract_keys(world: Callable[..., World]) -> None:
    w = world()
    empty = w.records.stats()

    assert {"queued", "scheduled", "in_flight", "dead", "delivered", "oldest_age_s",
            "circuit"} <= set(empty)
    assert empty["oldest_age_s"] is None
    assert (empty["queued"], empty["dead"], empty["circuit"]) == (0, 0, "closed")

    first = w.add().call_id
    w.add()
    w.clock.advance(10.5)
    w.lc.claim(first, 1)
    stats = w.records.stats()
    assert stats["oldest_age_s"] == pytest.approx(12.5)
    assert (stats["queued"], stats["in_flight"]) == (1, 1)
