"""The ``dispatcher dlq`` command: list, show, replay, purge and export dead letters."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis

from dispatcher.cli.console import CliError, UsageError, client_for, emit, say
from dispatcher.deadletters import DeadLetters, Filter
from dispatcher.display import json_text
from dispatcher.records import CallRecord
from dispatcher.settings import Settings


@dataclass(frozen=True)
class Dlq:
    """What every ``dlq`` subcommand reads: the settings, the store, the arguments."""

    settings: Settings
    client: redis.Redis
    dead: DeadLetters
    args: argparse.Namespace
    flt: Filter


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``dispatcher dlq SUBCOMMAND``: one function per subcommand (`COMMANDS`)."""
    client = client_for(settings)
    dead = DeadLetters(client, settings.prefix, max_invalid=settings.max_invalid)
    flt = Filter(getattr(args, "reason", None), getattr(args, "since", None),
                 getattr(args, "until", None), getattr(args, "search", None))
    command = COMMANDS.get(args.dlq_command)
    if command is None:
        raise CliError(f"unknown dlq command {args.dlq_command!r}")
    return command(Dlq(settings, client, dead, args, flt))


def _json(dlq: Dlq, record: CallRecord) -> dict[str, Any]:
    """A dead letter as JSON; with several communities (DISPATCHER_COMMUNITIES) it names
    its community."""
    data = record.to_json(dlq.settings.server_id)
    if dlq.settings.communities_file:
        data["community"] = dlq.settings.community
    return data


def list_letters(dlq: Dlq) -> int:
    """``dlq list``: a table (or a JSON array) of the matching dead letters."""
    letters = dlq.dead.list(dlq.flt, dlq.args.limit)
    if dlq.args.json:
        emit([_json(dlq, r) for r in letters])
        return 0
    summary = dlq.dead.invalid_summary()
    if not letters:
        say("No dead letters.")
    else:
        _table(letters)
    if summary["count"]:
        say(f"{summary['count']} older invalid inbox entr"
            f"{'y was' if summary['count'] == 1 else 'ies were'} summarised beyond "
            "DISPATCHER_MAX_INVALID (records dropped; from "
            f"{summary['oldest_at']} to {summary['newest_at']}; `dispatcher stats "
            "--json` has the count)")
    return 0


def show(dlq: Dlq) -> int:
    """``dlq show ID``: one dead letter, with the raw text of an invalid entry."""
    args = dlq.args
    record = dlq.dead.get(args.id)
    if record is None:
        raise CliError(f"no dead letter with id {args.id!r}")
    data = _json(dlq, record)
    raw = dlq.dead.raw(args.id)
    if raw is not None:
        data["raw"] = raw
    if args.json:
        emit(data)
    else:
        for key, value in data.items():
            if value not in (None, "", {}):
                shown = json.dumps(value, ensure_ascii=False) if isinstance(
                    value, (dict, list)) else value
                say(f"{key:>15}: {shown}")
    return 0


def export(dlq: Dlq) -> int:
    """``dlq export``: the matching dead letters as JSON lines."""
    for record in dlq.dead.iter(dlq.flt):
        print(json_text(_json(dlq, record)))
    return 0


def replay(dlq: Dlq) -> int:
    """``dlq replay (ID... | --all | filters)``: back in line, sent with today's credentials."""
    ids = _select(dlq.dead, dlq.args, dlq.flt)
    return _replay(dlq.settings, dlq.client, dlq.dead, ids, dlq.args.json)


def purge(dlq: Dlq) -> int:
    """``dlq purge (ID... | --all | filters) --yes``: deleted for good."""
    args, dead = dlq.args, dlq.dead
    ids = _select(dead, args, dlq.flt)
    if not args.yes and not _confirm(f"Delete {len(ids)} dead letter(s) for good?"):
        raise UsageError(f"purge deletes {len(ids)} dead letter(s) for good; add --yes")
    purged = [i for i in ids if dead.purge(i)]
    missing = sorted(set(ids) - set(purged))
    if missing and not purged and ids:
        raise CliError(f"not a dead letter: {', '.join(missing)}")
    if args.json:
        emit({"purged": len(purged), "not_found": missing})
    else:
        say(f"Purged {len(purged)} dead letter(s).")
    for i in missing:
        say(f"dispatcher: warning: {i} is not a dead letter", err=True)
    return 0


#: ``dispatcher dlq`` subcommands by name.
COMMANDS: dict[str, Callable[[Dlq], int]] = {
    "list": list_letters, "show": show, "export": export, "replay": replay, "purge": purge,
}


def _table(letters: list[Any]) -> None:
    say(f"{'ID':26}  {'REASON':9}  {'STATUS':6}  {'DEAD AT':19}  ANSWER / CALLER")
    for r in letters:
        dead_at = datetime.fromtimestamp(r.dead_at or 0, tz=timezone.utc)
        what = (r.response or r.last_error or "").strip().splitlines()
        removal = "REMOVAL: " if r.kind == "removal" else ""
        say(f"{r.id:26}  {r.reason or '':9}  {str(r.status_code or '-'):6}  "
            f"{dead_at:%Y-%m-%d %H:%M:%S}  {removal}{(what[0] if what else '')[:40]} / "
            f"{str(r.call.get('caller', '(invalid entry)'))[:30]}")
    say(f"{len(letters)} dead letter(s)")


def _confirm(question: str) -> bool:
    """Ask on a terminal; never when a script runs us (no tty means no)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _select(dead: DeadLetters, args: argparse.Namespace, flt: Filter) -> list[str]:
    has_filter = any(getattr(args, n, None) for n in ("reason", "since", "until", "search"))
    if args.ids and (args.all or has_filter):
        raise UsageError("give either ids or --all/filters, not both")
    if args.ids:
        return list(dict.fromkeys(args.ids))
    if not (args.all or has_filter):
        raise UsageError("name the dead letters: ids, --all, or a filter such as --reason")
    return [r.id for r in dead.iter(flt)]


def _replay(settings: Settings, client: redis.Redis, dead: DeadLetters, ids: list[str],
            as_json: bool) -> int:
    from dispatcher.schedule import release_now

    outcomes: dict[str, list[str]] = {}
    show = sys.stderr.isatty() and len(ids) > 20
    for n, call_id in enumerate(ids, 1):
        outcomes.setdefault(dead.replay(call_id), []).append(call_id)
        if show and (n % 50 == 0 or n == len(ids)):
            print(f"\rreplaying {n}/{len(ids)}", end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    replayed = outcomes.get("replayed", [])
    if replayed:
        # Put the first of them in play now; the scheduler releases the rest in order.
        try:
            release_now(settings, client)
        except Exception as exc:
            say(f"dispatcher: warning: replayed calls wait for the scheduler "
                f"({type(exc).__name__})", err=True)
    failed = {k: v for k, v in outcomes.items() if k != "replayed"}
    labels = {"missing": "no such call", "not_dead": "not a dead letter",
              "unreplayable": "an invalid entry (no call to send)"}
    if failed and not replayed and ids:
        raise CliError("nothing replayed: " + "; ".join(
            f"{i}: {labels.get(kind, kind)}" for kind, group in failed.items() for i in group))
    if as_json:
        emit({"replayed": len(replayed), "ids": replayed,
               "not_replayed": {k: v for k, v in failed.items()}})
    else:
        say(f"Replayed {len(replayed)} dead letter(s); they are back in line, oldest first, "
            "and will be sent with the credentials configured now.")
    for kind, failed_ids in failed.items():
        for i in failed_ids:
            say(f"dispatcher: warning: {i}: {labels.get(kind, kind)}", err=True)
    return 0
