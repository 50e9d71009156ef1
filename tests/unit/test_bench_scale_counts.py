"""bench/redisstats.py (INFO counters around a measurement) and bench/scale.py's sizing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from redisstats import Counters, counters, delta, per_call  # noqa: E402
from scale import calls_for, median_rows, shares  # noqa: E402


def _info(calls: dict[str, int], total: int, reads: int, memory: int) -> dict[str, object]:
    """What redis-py's client.info("all") gives: cmdstat_* as dicts, the rest as numbers."""
    info: dict[str, object] = {f"cmdstat_{name}": {"calls": n, "usec": 3 * n,
                                                   "usec_per_call": 3.0}
                               for name, n in calls.items()}
    info.update(total_commands_processed=total, total_reads_processed=reads,
                used_memory=memory, redis_version="6.2.14", connected_clients=3)
    return info


def test_counters_reads_commandstats_and_stats() -> None:
    c = counters(_info({"evalsha": 2, "HSET": 5, "info": 1}, 8, 4, 1000))
    assert c.commands == {"evalsha": 2, "hset": 5, "info": 1}
    assert (c.total_commands, c.reads, c.used_memory) == (8, 4, 1000)


def test_counters_without_commandstats_is_empty() -> None:
    assert counters({"redis_version": "6.2.14"}) == Counters()


def test_delta_takes_out_the_snapshot_info() -> None:
    before = counters(_info({"info": 3, "get": 10}, 13, 13, 1000))
    # One EVALSHA running three commands, one GET, and the first snapshot's INFO.
    after = counters(_info({"info": 4, "get": 11, "evalsha": 1, "hset": 2, "zadd": 1},
                           19, 16, 1600))
    d = delta(before, after)
    assert d.commands == {"evalsha": 1, "get": 1, "hset": 2, "zadd": 1}
    assert d.total_commands == 5
    assert d.reads == 2
    assert d.used_memory == 600


def test_per_call_sums_and_ranks() -> None:
    d = Counters({"evalsha": 4, "hset": 8, "zadd": 2, "brpop": 2, "get": 1}, 17, 8, 0)
    out = per_call(d, 2, top=2)
    assert out["commands"] == 8.5
    assert out["round_trips"] == 4.0
    assert out["scripts"] == 2.0
    assert out["total_commands_processed"] == 8.5
    assert out["by_command"] == {"hset": 4.0, "evalsha": 2.0, "other": 2.5}
    assert list(per_call(d, 1)["by_command"]) == ["hset", "evalsha", "brpop", "zadd", "get"]
    with pytest.raises(ValueError):
        per_call(d, 0)


def test_calls_for_sizes_the_backlog() -> None:
    assert calls_for(1, 8, 0, 600, 2) == 600
    assert calls_for(1, 8, 100, 600, 2) == 200  # 160 ideal, at least 200
    assert calls_for(2, 8, 100, 600, 2) == 320
    assert calls_for(8, 8, 100, 600, 2) == 600  # at most --calls
    assert calls_for(1, 8, 100, 150, 2) == 150  # a smaller --calls wins over the floor


def test_shares_split_evenly() -> None:
    assert shares(10, 4) == [3, 3, 2, 2]
    assert shares(3, 8) == [1, 1, 1, 0, 0, 0, 0, 0]
    assert sum(shares(601, 8)) == 601


def test_median_rows_recurse_and_fill_missing_commands() -> None:
    rows = [{"calls_per_s": 1.0, "by": {"hset": 2.0}},
            {"calls_per_s": 3.0, "by": {"hset": 4.0, "zadd": 1.0}},
            {"calls_per_s": 2.0, "by": {"hset": 3.0, "zadd": 1.0}}]
    assert median_rows(rows) == {"calls_per_s": 2.0, "by": {"hset": 3.0, "zadd": 1.0}}
