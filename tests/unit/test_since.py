"""dispatcher.since: the one reader of "since" (CLI `--since` and the page's field)."""

from __future__ import annotations

import argparse

import pytest

from dispatcher.cli.main import _since
from dispatcher.since import parse_since

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("text", "back_s"), [
    ("30m", 1800), (" 2h ", 7200), ("1d", 86400), ("90s", 90), ("1.5h", 5400),
    ("30M", 1800), ("2 h", 7200),
])
def test_a_duration_counts_back_from_now(text: str, back_s: float) -> None:
    assert parse_since(text, NOW) == NOW - back_s


@pytest.mark.parametrize("text", [
    "2023-11-14T22:13:20Z", "2023-11-14T22:13:20", "2023-11-14T23:13:20+01:00",
])
def test_an_iso_time_is_utc_unless_it_says_otherwise(text: str) -> None:
    assert parse_since(text, NOW) == NOW


@pytest.mark.parametrize("text", ["yesterday", "", "m", "-5m", "5w"])
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_since(text, NOW)


def test_the_cli_reads_since_with_the_same_parser() -> None:
    assert _since("2023-11-14T22:13:20Z") == NOW
    with pytest.raises(argparse.ArgumentTypeError, match="duration like 30m"):
        _since("yesterday")
