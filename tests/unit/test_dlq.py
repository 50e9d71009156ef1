"""dispatcher.cli.dlq: one function per subcommand, and the refusals they share.

On fakeredis (the command's Redis client is swapped for it); the whole command against
a real Redis and real dead letters is in tests/integration and tests/security.
"""

from __future__ import annotations

import argparse

import fakeredis
import pytest

from dispatcher.cli import dlq
from dispatcher.cli.console import CliError, UsageError
from dispatcher.cli.main import build_parser
from dispatcher.settings import Settings


@pytest.fixture(autouse=True)
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    client = fakeredis.FakeRedis()
    monkeypatch.setattr(dlq, "client_for", lambda settings: client)
    return client


def run(*argv: str) -> int:
    return dlq.run(Settings(), build_parser().parse_args(["dlq", *argv]))


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_dlq_subcommand_of_the_parser_has_its_function() -> None:
    dlq_parser = _subcommands(build_parser())["dlq"]

    assert set(_subcommands(dlq_parser)) == set(dlq.COMMANDS)


def test_an_unknown_subcommand_is_a_one_line_error() -> None:
    with pytest.raises(CliError, match="unknown dlq command 'explode'"):
        dlq.run(Settings(), argparse.Namespace(dlq_command="explode"))


def test_list_says_when_there_is_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("list") == 0
    assert capsys.readouterr().out.strip() == "No dead letters."
    assert run("list", "--json") == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_show_of_an_unknown_id_is_an_error() -> None:
    with pytest.raises(CliError, match="no dead letter with id 'nope'"):
        run("show", "nope")


def test_export_of_nothing_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("export") == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("sub", ["replay", "purge"])
def test_replay_and_purge_need_ids_or_a_filter_but_not_both(sub: str) -> None:
    with pytest.raises(UsageError, match="name the dead letters"):
        run(sub)
    with pytest.raises(UsageError, match="either ids or --all"):
        run(sub, "01ABC", "--all")


def test_purge_without_yes_and_without_a_terminal_refuses() -> None:
    with pytest.raises(UsageError, match="add --yes"):
        run("purge", "--all")


def test_purge_of_ids_that_are_not_dead_letters_is_an_error() -> None:
    with pytest.raises(CliError, match="not a dead letter: 01ABC"):
        run("purge", "01ABC", "--yes")


def test_replay_of_ids_that_are_not_dead_letters_is_an_error() -> None:
    with pytest.raises(CliError, match="nothing replayed: 01ABC: no such call"):
        run("replay", "01ABC")
