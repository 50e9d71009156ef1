"""The ``dispatcher`` command line. Every error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import redis

from dispatcher import __version__
from dispatcher import clock as shared_clock
from dispatcher.cli import processes
from dispatcher.cli.console import (
    EXIT_ERROR,
    EXIT_USAGE,
    CliError,
    UsageError,
    client_for,
    emit,
    first_line,
    say,
)
from dispatcher.errors import ConfigError, DispatcherError, InvalidCall
from dispatcher.redisconn import UNREACHABLE, refusal
from dispatcher.settings import Settings
from dispatcher.since import parse_since


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        say(f"dispatcher: error: {message} (see --help)", err=True)
        raise SystemExit(EXIT_USAGE)


def _since(value: str) -> float:
    """`dispatcher.since.parse_since` as an argparse type (its error is argparse's)."""
    try:
        return parse_since(value, shared_clock.now())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time or a duration like 30m: {value!r}") from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return number


def _meta(value: str) -> tuple[str, str]:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    key, _, val = value.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"empty key in {value!r}")
    return key, val


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dispatcher", description="Durable, queued 911 calls into Sonoran CAD.")
    p.add_argument("--version", action="version", version=f"dispatcher {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser,
                           metavar="COMMAND")

    e = sub.add_parser("enqueue", help="queue one 911 call and print its id")
    e.add_argument("--caller", required=True)
    e.add_argument("--location", required=True)
    e.add_argument("--description", required=True)
    e.add_argument("--postal")
    e.add_argument("--plate")
    e.add_argument("--server-id")
    e.add_argument("--civil", action="store_true", help="a civil (non-emergency) call")
    e.add_argument("--meta", action="append", type=_meta, default=[], metavar="KEY=VALUE")
    e.add_argument("--idempotency-key")
    e.add_argument("--json", action="store_true")
    _community_option(e)

    s = sub.add_parser("status", help="where one call is")
    s.add_argument("id", help="our id, its ticket, or the CAD's id of a call we delivered")
    s.add_argument("--json", action="store_true")
    _community_option(s)

    rm = sub.add_parser("remove", help="take calls back: never sent, or removed from the CAD")
    rm.add_argument("ids", nargs="+", metavar="ID",
                    help="our id, its ticket, or the CAD's id of a call we delivered")
    rm.add_argument("--json", action="store_true")
    _community_option(rm)

    st = sub.add_parser("stats", help="queue depth, oldest age, dead letters, circuit")
    st.add_argument("--json", action="store_true")
    st.add_argument("--watch", action="store_true", help="refresh every --interval seconds")
    st.add_argument("--interval", type=float, default=2.0)
    st.add_argument("--community", metavar="NAME",
                    help="one community only (default: all, summed, with each under "
                         "'communities' when there are several)")

    rl = sub.add_parser("reload", help="every process reads DISPATCHER_COMMUNITIES again")
    rl.add_argument("--json", action="store_true")

    d = sub.add_parser("dlq", help="dead letters: list, show, replay, purge, export")
    dsub = d.add_subparsers(dest="dlq_command", required=True, parser_class=_Parser,
                            metavar="{list,show,replay,purge,export}")

    def filters(sp: argparse.ArgumentParser) -> None:
        _community_option(sp)
        sp.add_argument("--reason")
        sp.add_argument("--since", type=_since, metavar="WHEN",
                        help="ISO 8601 time or a duration ago (30m, 2h, 1d)")
        sp.add_argument("--until", type=_since, metavar="WHEN")
        sp.add_argument("--search", help="text in caller, location or description")

    dl = dsub.add_parser("list", help="list dead letters, newest first")
    filters(dl)
    dl.add_argument("--limit", type=_positive_int, default=None)
    dl.add_argument("--json", action="store_true")
    ds = dsub.add_parser("show", help="one dead letter in full")
    ds.add_argument("id")
    ds.add_argument("--json", action="store_true")
    _community_option(ds)
    dr = dsub.add_parser("replay", help="put dead letters back in line")
    dr.add_argument("ids", nargs="*")
    dr.add_argument("--all", action="store_true")
    filters(dr)
    dr.add_argument("--json", action="store_true")
    dp = dsub.add_parser("purge", help="delete dead letters for good")
    dp.add_argument("ids", nargs="*")
    dp.add_argument("--all", action="store_true")
    filters(dp)
    dp.add_argument("--yes", action="store_true", help="confirm")
    dp.add_argument("--json", action="store_true")
    dx = dsub.add_parser("export", help="dead letters as JSON lines on stdout")
    filters(dx)

    sim = sub.add_parser("simulate-cad", help="run the built-in CAD simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_port, default=8080)
    sim.add_argument("--control-port", type=_port, default=None)

    r = sub.add_parser("run", help="start every process (and Redis if needed) in one command")
    r.add_argument("--demo", action="store_true",
                   help="also run the CAD simulator and a scripted outage; exits when done")
    r.add_argument("--calls", type=_positive_int, default=30, help="calls the demo makes")

    w = sub.add_parser("worker", help="the Celery worker that sends calls to the CAD")
    w.add_argument("--concurrency", type=_positive_int, default=None)
    w.add_argument("--loglevel", default="INFO")
    w.add_argument("-n", "--hostname", default="dispatcher@%h-%i",
                   help="Celery's node name (default dispatcher@%%h-%%i: this host's name "
                        "and the process index); distinct for every worker process")
    sub.add_parser("scheduler", help="moves due retries and the backlog back into play")
    sub.add_parser("bridge", help="moves the Redis inbox into the queue")
    sub.add_parser("web", help="HTTP ingest, /metrics, /healthz and the operations page")
    return p


def _community_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--community", metavar="NAME",
                    help="the community (DISPATCHER_COMMUNITIES); default: the default one")


#: Commands that work on one community's keys (`--community`, else the default one).
SCOPED = frozenset({"enqueue", "status", "remove", "dlq"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (CliError, DispatcherError) as exc:
        _error(str(exc))
        usage = isinstance(exc, (ConfigError, InvalidCall, UsageError))
        return EXIT_USAGE if usage else EXIT_ERROR
    except UNREACHABLE as exc:
        _error(refusal(exc) or f"cannot reach Redis: {first_line(exc)}")
        return EXIT_ERROR
    except redis.RedisError as exc:
        _error(f"Redis error: {first_line(exc)}")
        return EXIT_ERROR
    except OSError as exc:  # a port in use, a folder we cannot write
        _error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _error(text: str) -> None:
    """The one-line error of a command, secrets hidden (a library's text may hold a URL)."""
    from dispatcher import redact

    say(f"dispatcher: error: {redact.text(text)}", err=True)


def _dispatch(args: argparse.Namespace) -> int:
    from dispatcher import redact

    settings = Settings.from_env()
    redact.install(settings)  # every log line, error and traceback of this process
    named = getattr(args, "community", None)
    if args.command in SCOPED and (named or settings.communities_file):
        from dispatcher.communities import load

        settings = load(settings).get(named).settings
    command = COMMANDS.get(args.command)
    if command is None:
        raise CliError(f"unknown command {args.command!r}")
    return command(settings, args)


def _enqueue(settings: Settings, args: argparse.Namespace) -> int:
    from dispatcher.call import Call
    from dispatcher.producer import Producer

    call = Call.create(
        caller=args.caller, location=args.location, description=args.description,
        postal=args.postal, plate=args.plate, server_id=args.server_id,
        is_emergency=not args.civil, metadata=dict(args.meta) or None,
        idempotency_key=args.idempotency_key,
    )
    # A one-shot command fails with a one-line error when Redis is down; it keeps no
    # spool (DISPATCHER_SPOOL_DIR is for long-running Python producers).
    producer = Producer(settings.with_(spool_dir=None))
    try:
        call_id = producer.enqueue(call, "cli")
    finally:
        producer.close()
    if args.json:
        emit({"id": call_id})
    else:
        say(call_id)
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from dispatcher.keys import Keys
    from dispatcher.records import Records
    from dispatcher.takeback import resolve

    client = client_for(settings)
    found = resolve(client, Keys(settings.prefix), args.id)
    record = Records(client, settings.prefix).get(found or args.id)
    if record is None:
        raise CliError(f"no call with id {args.id!r} (our id, its ticket or the CAD's id; "
                       "delivered calls are kept for 7 days)")
    data = record.to_json(settings.server_id)
    if args.json:
        emit(data)
        return 0
    line = f"{record.id}  {record.status}"
    if record.status == "delivered":
        line += f"  CAD call {record.cad_call_id or '?'}"
    elif record.status == "dead":
        line += f"  reason: {record.reason}"
    elif record.status == "removing":
        line += f"  (removing CAD call {record.cad_call_id or '?'} from the CAD)"
    elif record.status == "removed":
        line += f"  (CAD call {record.cad_call_id or '?'} removed from the CAD)"
    elif record.status == "verifying":
        line += "  (its answer was lost: checking the CAD's list before sending again)"
    elif record.state == "held":
        line += "  (waiting for its turn)"
    elif record.state == "sending":
        line += "  (being sent now)"
    elif record.due:
        line += f"  next attempt {data['next_attempt_at']}"
    say(line)
    if record.remove_requested:
        say("  taken back: removed or cancelled once this send's outcome is known")
    if record.ticket is not None:
        say(f"  ticket: {record.ticket}")
    say(f"  attempts: {record.attempts}")
    if record.last_error:
        say(f"  last error: {record.last_error}")
    if record.call:
        say(f"  call: {record.call.get('caller')} @ {record.call.get('location')}: "
            f"{record.call.get('description')}")
    else:
        say("  call: none (an invalid inbox entry; `dispatcher dlq show` has its raw text)")
    say(f"  enqueued: {data['enqueued_at']}")
    return 0


def _stats(settings: Settings, args: argparse.Namespace) -> int:
    from dispatcher.communities import load
    from dispatcher.records import Records

    client = client_for(settings)
    served = load(settings)
    chosen = [served.get(args.community)] if args.community else list(served)
    every = {c.name: Records(client, c.prefix) for c in chosen}
    main_name = chosen[0].name if args.community else (served.default_name or chosen[0].name)
    while True:
        each = {name: records.stats() for name, records in every.items()}
        s = summed(each, main_name)
        gone = {} if args.community else removed_communities(client, served)
        if gone:
            s["removed_communities"] = gone
        if args.json:
            emit(s, indent=None)
        else:
            if args.watch and sys.stdout.isatty():
                print("\033[2J\033[H", end="")
            age = "-" if s["oldest_age_s"] is None else f"{s['oldest_age_s']:.1f}s"
            summarised = (f"  invalid summarised {s['invalid_summarised']}"
                          if s.get("invalid_summarised") else "")
            verifying = f"  verifying {s['verifying']}" if s.get("verifying") else ""
            readback = ("  read-back UNAVAILABLE (possible duplicates "
                        f"{s['possible_duplicates']})" if s["readback"] == "unavailable" else "")
            say(f"queued {s['queued']}  scheduled {s['scheduled']}  in flight "
                f"{s['in_flight']}{verifying}  delivered {s['delivered']}  dead {s['dead']}  "
                f"oldest {age}  circuit {s['circuit']}{summarised}{readback}")
            for name, one in gone.items():
                say(f"community {name} is no longer in DISPATCHER_COMMUNITIES: "
                    f"{one['queued'] + one['scheduled'] + one['in_flight']} calls wait in "
                    f"Redis until it is back")
        if not args.watch:
            return 0
        time.sleep(max(0.2, args.interval))


def removed_communities(client: Any, served: Any) -> dict[str, dict[str, Any]]:
    """Stats of the communities no longer in the file whose calls still wait in Redis
    (found by their ``pending`` key; a reload removed them, their calls are kept)."""
    from dispatcher.communities import DEFAULT_NAME, prefix_of
    from dispatcher.records import Records
    from dispatcher.redisconn import as_text

    known = {c.prefix for c in served}
    base = next(iter(served)).prefix.split("@", 1)[0]
    found: dict[str, dict[str, Any]] = {}
    for key in client.scan_iter(match=f"{base}*:pending", count=1000):
        prefix = as_text(key)[: -len(":pending")]
        name = prefix.split("@", 1)[1] if "@" in prefix else DEFAULT_NAME
        if prefix not in known and prefix == prefix_of(base, name):
            found[name] = Records(client, prefix).stats()
    return dict(sorted(found.items()))


#: Stats that add up across communities (the others are the main community's).
SUMMED = ("queued", "scheduled", "in_flight", "dead", "delivered", "verifying",
          "verified_found", "verified_missing", "possible_duplicates", "cancelled", "removed",
          "enqueued", "retried", "rate_limited", "invalid_summarised")


def summed(each: dict[str, dict[str, Any]], main: str) -> dict[str, Any]:
    """One stats dict from each community's: counts summed, the oldest age the oldest,
    ``circuit``, ``readback`` and the rest the main (default) community's; with several,
    every community's own under ``communities``."""
    if len(each) == 1:
        return next(iter(each.values()))
    s = dict(each[main])
    for key in SUMMED:
        s[key] = sum(one.get(key, 0) for one in each.values())
    ages = [one["oldest_age_s"] for one in each.values() if one["oldest_age_s"] is not None]
    s["oldest_age_s"] = max(ages) if ages else None
    reasons: dict[str, int] = {}
    for one in each.values():
        for reason, n in one["dead_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    s["dead_by_reason"] = reasons
    s["communities"] = each
    return s


def _remove(settings: Settings, args: argparse.Namespace) -> int:
    from dispatcher.takeback import TakeBacks, UnknownCall

    takebacks = TakeBacks(client_for(settings), settings.prefix)
    shown = {"cancelled": "cancelled: it will never be sent",
             "pending": "being sent now: removed or cancelled once the outcome is known",
             "removing": "removing it from the CAD", "removed": "already removed from the CAD"}
    results, unknown = [], []
    for given in args.ids:
        try:
            call_id, done = takebacks.remove(given)
        except UnknownCall as exc:
            unknown.append(str(exc))
            results.append({"id": given, "error": str(exc)})
            continue
        results.append({"id": call_id, "given": given, "status": done})
        if not args.json:
            say(f"{call_id}  {shown.get(done, done)}")
    if args.json:
        emit(results)
    for text in unknown:
        _error(text)
    return EXIT_ERROR if unknown else 0


def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from dispatcher.cli import dlq

    return dlq.run(settings, args)


def _simulate_cad(settings: Settings, args: argparse.Namespace) -> int:
    from dispatcher.simulator import serve

    serve(args.host, args.port, settings.community_id or "demo-community",
          settings.api_key.reveal() if settings.api_key else "demo-key",
          control_port=args.control_port)
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if args.demo:
        from dispatcher.cli.demo import run_demo

        return run_demo(settings, calls=args.calls)
    from dispatcher.cli.runner import run

    return run(settings)


#: ``dispatcher`` commands by name: one function of the settings and the arguments each.
def _reload(settings: Settings, args: argparse.Namespace) -> int:
    """Check the communities file, then tell every process (through Redis) to read it."""
    from dispatcher.communities import load, reload_key

    if not settings.communities_file:
        raise UsageError("DISPATCHER_COMMUNITIES is not set: there is no file to reload "
                         "(one community from the SONORAN_* variables; restart to change it)")
    served = load(settings)  # a wrong file is refused here, before any process sees it
    generation = int(client_for(settings).incr(reload_key(settings)))
    if args.json:
        emit({"communities": served.names, "default": served.default_name,
              "generation": generation})
    else:
        say(f"asked every process to reload {settings.communities_file} (request "
            f"{generation}): {len(served)} communities ({', '.join(served.names)}); each "
            "process reads it within a second or two")
    return 0


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "reload": _reload,
    "enqueue": _enqueue, "status": _status, "remove": _remove, "stats": _stats, "dlq": _dlq,
    "simulate-cad": _simulate_cad, "run": _run, "worker": processes.worker,
    "scheduler": processes.scheduler, "bridge": processes.bridge, "web": processes.web,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
