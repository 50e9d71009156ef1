"""Duplicates per 1,000 ambiguous sends, and the delay a verifying call adds.

An ambiguous send is one the CAD acted on but whose answer we lost: the simulator
creates the call, then hangs past our read timeout (``commit_then_hang``) or resets the
connection (``commit_then_drop``), alternately, in small batches among ordinary calls.
The dispatcher makes each such call ``verifying`` and settles it by reading the CAD's
list back (dispatcher/readback.py). Two sides, each with its own private Redis,
simulator, ``python -m dispatcher worker`` and ``scheduler``, the same driver:

- read-back: the CAD can be read back (the dispatcher's path);
- no read-back: ``set_readback(enabled=False)``, so unknown outcomes are re-sent
  blindly, as before issue 12: the plain alternative the figure is compared with.

Every figure comes from the records once everything is delivered:

- ambiguous sends: create requests the simulator answered with a commit fault (each
  created a call); duplicates: the simulator's ``duplicate_tags`` (CAD calls repeating
  one of our ids), per 1,000 ambiguous sends;
- lost: calls we enqueued that we did not record as delivered, or recorded with a CAD
  id that is not one the CAD created with our id (or that the CAD never created);
- the added delay of a verifying call: our ``delivered_at`` minus the moment its answer
  was lost. That moment is the worker's outcome time, which the record keeps as
  ``verify_at`` minus the verify delay (dispatcher.lifecycle sets ``verify_at`` to the
  outcome time plus ``VERIFY_AFTER_S``; ``updated_at`` is overwritten on delivery). As a
  check, the lost answer's lag behind the CAD's creation time is shown per fault (a
  hang: about the read timeout; a reset: about 0);
- the CAD-to-record span: ``delivered_at`` minus the CAD's creation time of the call's
  first copy, for calls whose first send was ambiguous, on both sides.

The driver plays the dispatchers too: a CAD call is cleared from the list
``--clear-after`` seconds after it came (v1 10 s, v2 30 s: longer than a verifying
call's longest wait, about 4 s and 22 s, so no call is cleared before its read-back; a
clearing that came first is the window readback.py names, and shows as duplicates;
``--clear-after 0`` never clears). v2 defaults to 4 calls/s and 200 ambiguous sends
(about 100 s a side): its read-back comes at most every 20 s, so 1,000 would take about
8 minutes a side for the same spread of phases.

    .venv/bin/python bench/dup_window.py [--ambiguous 1000] [--api-version 1|2] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import cycle
from pathlib import Path
from typing import Any

import redis
from common import (
    API_KEY,
    COMMUNITY,
    Proc,
    dispatcher_proc,
    emit,
    enqueue_seed,
    machine,
    percentile,
    private_redis,
    product_env,
    progress,
    rnd,
)

from dispatcher import Producer  # noqa: E402
from dispatcher.ratelimit import Flow  # noqa: E402
from dispatcher.readback import V1_INTERVAL_S, V2_INTERVAL_S, VERIFY_AFTER_S  # noqa: E402
from dispatcher.records import Records  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.simulator import CadSimulator  # noqa: E402

HANG, DROP = "commit_then_hang", "commit_then_drop"
SIDES = {"read-back": True, "no read-back": False}
#: A short breaker, both sides: blind re-sends meet the next faults in a row and open it,
#: and its default cooldown (5 s, doubling to 60 s) would stall the driver, not measure.
BREAKER = {"DISPATCHER_CIRCUIT_COOLDOWN_S": 1, "DISPATCHER_CIRCUIT_MAX_COOLDOWN_S": 2}
#: The text a call found by the read-back is delivered with (dispatcher/lua/readback_settle).
FOUND = "found in the CAD's list after an unknown outcome"


@dataclass(frozen=True)
class Plan:
    """What one side runs: the API, the driver's shape and the worker's settings."""

    version: int
    ambiguous: int
    batch: int
    ordinary: int  # ordinary calls per ambiguous send
    read_timeout_s: float
    max_rate: float
    clear_after_s: float  # dispatchers clear a CAD call this long after it came; 0: never

    @property
    def interval_s(self) -> float:
        return V2_INTERVAL_S if self.version == 2 else V1_INTERVAL_S


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ambiguous", type=int, default=None,
                        help="ambiguous sends per side (default: v1 1000, v2 200)")
    parser.add_argument("--api-version", type=int, choices=(1, 2), default=1)
    parser.add_argument("--batch", type=int, default=2,
                        help="ambiguous sends per fault: a hang batch's failures and the next "
                             "reset batch's come in a row, together below the breaker's 5")
    parser.add_argument("--ordinary", type=int, default=1,
                        help="ordinary calls enqueued per ambiguous send")
    parser.add_argument("--read-timeout", type=float, default=1.0,
                        help="DISPATCHER_READ_TIMEOUT_S: how long a hung answer is awaited")
    parser.add_argument("--max-rate", type=float, default=None,
                        help="DISPATCHER_MAX_RATE (default: v1 20, v2 4)")
    parser.add_argument("--clear-after", type=float, default=None,
                        help="seconds until the dispatchers clear a CAD call from the list; "
                             "0: never (default: v1 10, v2 30)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    v2 = args.api_version == 2
    ambiguous = args.ambiguous or (200 if v2 else 1000)
    plan = Plan(args.api_version, ambiguous, args.batch, args.ordinary, args.read_timeout,
                args.max_rate if args.max_rate is not None else (4.0 if v2 else 20.0),
                args.clear_after if args.clear_after is not None else (30.0 if v2 else 10.0))
    sides = {name: run_side(plan, readable) for name, readable in SIDES.items()}
    ours, blind = sides["read-back"], sides["no read-back"]
    delay = ours["verifying_delay_s"]
    result = {
        "figure": "dup_window",
        "command": f"bench/dup_window.py --ambiguous {ambiguous} --api-version {plan.version} "
                   f"--batch {plan.batch} --ordinary {plan.ordinary} "
                   f"--read-timeout {plan.read_timeout_s:g} --max-rate {plan.max_rate:g} "
                   f"--clear-after {plan.clear_after_s:g}",
        "machine": machine(),
        "api_version": plan.version,
        "verify_after_s": VERIFY_AFTER_S,
        "readback_interval_s": plan.interval_s,
        "shared_rate_slot_s": (rnd(Flow.from_settings(Settings(max_rate=plan.max_rate))
                                   .interval_s, 4) if plan.version == 1 else None),
        "read_timeout_s": plan.read_timeout_s,
        "max_rate": plan.max_rate,
        "clear_after_s": plan.clear_after_s,
        "sides": sides,
        "goals": {
            "0 duplicates per 1,000 ambiguous sends with read-back":
                ours["duplicates"] == 0 and ours["ambiguous_sends"] > 0,
            "no call lost, either side": ours["lost"] == 0 and blind["lost"] == 0,
            f"verifying call's delay beyond the {VERIFY_AFTER_S:g} s verify delay, p99 <= one "
            f"read-back interval ({plan.interval_s:g} s)":
                delay["n"] > 0 and delay["p99"] - VERIFY_AFTER_S <= plan.interval_s,
        },
    }
    emit(result, args.json, render)
    return 0


def run_side(plan: Plan, readable: bool) -> dict[str, Any]:
    """One side: its own Redis, simulator and processes; the driver; the records."""
    name = "read-back" if readable else "no read-back"
    folder = Path(tempfile.mkdtemp(prefix="bench-dupwin-"))
    sim = CadSimulator(community_id=COMMUNITY, api_key=API_KEY).start()
    sim.set_readback(enabled=readable)
    procs: list[Proc] = []
    try:
        with private_redis(folder) as server:
            env = product_env(server.url, sim.url, SONORAN_API_VERSION=plan.version,
                              DISPATCHER_READ_TIMEOUT_S=plan.read_timeout_s,
                              DISPATCHER_MAX_RATE=plan.max_rate, **BREAKER)
            procs += [dispatcher_proc(p, env, folder) for p in ("worker", "scheduler")]
            producer = Producer(Settings.from_env(env))
            records = Records(redis.Redis.from_url(server.url))
            started = time.time()
            try:
                ids = drive(plan, sim, producer, records, procs, name)
                sim.clear_faults()
                settle(plan, records, len(ids), procs, name)
                took = time.time() - started
                return measure(plan, sim, records, ids) | {"seconds": round(took, 1)}
            finally:
                producer.close()
                for p in procs:
                    p.stop()
    finally:
        sim.stop()
        shutil.rmtree(folder, ignore_errors=True)


def drive(plan: Plan, sim: CadSimulator, producer: Producer, records: Records,
          procs: list[Proc], name: str) -> list[str]:
    """Enqueue calls while faults make `plan.ambiguous` sends ambiguous; returns our ids.

    A fault covers the next `plan.batch` create requests; the calls enqueued with it are
    that many plus the ordinary ones, sent oldest first, so each batch of ambiguous sends
    is followed by ordinary ones. The next fault is set once this one's outcomes are all
    recorded (``retried`` counts them: nothing else fails here), so no fault replaces
    one that still has sends left and the backlog stays about one batch.
    """
    ids: list[str] = []
    kinds = cycle([HANG, DROP])
    shown = cleared = 0.0
    while (done := records.stats()["retried"]) < plan.ambiguous:
        if plan.clear_after_s and time.time() - cleared >= 1:
            cleared = time.time()
            clear(sim, cleared - plan.clear_after_s)
        count = min(plan.batch, plan.ambiguous - done)
        kind = next(kinds)
        params = {"max_s": plan.read_timeout_s + 2} if kind == HANG else {}
        sim.set_fault(kind, count=count, route="create", **params)
        for _ in range(count * (1 + plan.ordinary)):
            ids.append(enqueue_seed(producer, len(ids), "Duplicate window"))
        wait(partial(recorded, records, done + count), 30 + plan.read_timeout_s, procs,
             f"{count} {kind} outcomes")
        if time.time() - shown > 5:
            shown = time.time()
            progress(f"dup_window v{plan.version} {name}: {done + count}/{plan.ambiguous} "
                     f"ambiguous sends, {len(ids)} calls")
    return ids


def clear(sim: CadSimulator, before: float) -> None:
    """Play the dispatchers: clear the 911 calls that came before that time from the list."""
    for item in sim.active():
        if datetime.fromisoformat(item["updated"]).timestamp() < before:
            with contextlib.suppress(ValueError):  # gone meanwhile
                sim.dismiss(item["callId"])


def recorded(records: Records, outcomes: int) -> bool:
    """Whether that many failed sends have had their outcome recorded."""
    return int(records.stats()["retried"]) >= outcomes


def settle(plan: Plan, records: Records, calls: int, procs: list[Proc], name: str) -> None:
    """Wait until every call is delivered and none is verifying (or give up: counted lost)."""
    progress(f"dup_window v{plan.version} {name}: waiting for the last read-backs")
    try:
        wait(lambda: (lambda s: s["delivered"] >= calls and s["verifying"] == 0
                      and s["queued"] + s["scheduled"] + s["in_flight"] == 0)(records.stats()),
             60 + 3 * plan.interval_s, procs, "every call delivered")
    except TimeoutError as exc:
        progress(f"dup_window: {exc}; what is missing counts as lost")
    time.sleep(1)  # a late duplicate, if any, reaches the simulator's records


def wait(predicate: Any, timeout: float, procs: list[Proc], what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.argv[-1]} exited:\n{p.tail()}")
        if time.time() > deadline:
            tails = "\n".join(p.tail(8) for p in procs)
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}:\n{tails}")
        time.sleep(0.02)


def measure(plan: Plan, sim: CadSimulator, records: Records, ids: list[str]) -> dict[str, Any]:
    """Everything from the records: the CAD's, and ours."""
    received = sim.received()
    created = copies(sim)
    faults = ambiguous_tags(received)
    ours = dict(zip(ids, read_hashes(records, ids), strict=True))
    lost = [i for i in ids if ours[i].get("state") != "delivered"
            or ours[i].get("cad_call_id") not in {str(c["cad_id"]) for c in created.get(i, [])}]
    delays: list[float] = []
    lags: dict[str, list[float]] = {HANG: [], DROP: []}
    for call_id, h in ours.items():
        if "verify_at" in h and h.get("state") == "delivered":
            lost_at = float(h["verify_at"]) - VERIFY_AFTER_S
            delays.append(float(h["delivered_at"]) - lost_at)
            if call_id in faults and call_id in created:
                lags[faults[call_id][0]].append(lost_at - created[call_id][0]["at"])
    spans = [float(ours[i]["delivered_at"]) - created[i][0]["at"] for i in faults
             if i in created and ours.get(i, {}).get("delivered_at")]
    n = sum(len(k) for k in faults.values())
    stats, cad = records.stats(), sim.stats()
    return {
        "calls": len(ids),
        "ambiguous_sends": n,
        "ambiguous_by_fault": {k: sum(v.count(k) for v in faults.values()) for k in (HANG, DROP)},
        "cad_calls": cad["created"],
        "duplicates": cad["duplicate_tags"],
        "duplicates_per_1000_ambiguous": rnd(1000 * cad["duplicate_tags"] / n, 1) if n else None,
        "lost": len(lost),
        "dispatcher": {**{key: stats[key] for key in ("retried", "verified_found",
                                                      "verified_missing", "possible_duplicates",
                                                      "readback")},
                       "circuit_opened": int(records.client.hget(records.keys.counters,
                                                                 "circuit_opened") or 0)},
        "readbacks": sum(1 for r in received if r["route"] == "read"),
        "verifying_delay_s": spread(delays),
        "answer_lost_after_creation_s": {k: spread(v) for k, v in lags.items()},
        "cad_to_record_s": spread(spans),
    }


def copies(sim: CadSimulator) -> dict[str, list[dict[str, Any]]]:
    """Our id -> the CAD calls created with it, first first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for c in sim.calls():
        tag = (c["call"].get("metaData") or {}).get("dispatcherCallId")
        if tag:
            out.setdefault(str(tag), []).append(c)
    return out


def ambiguous_tags(received: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Our id -> the commit faults its create requests met, in order."""
    out: dict[str, list[str]] = {}
    for r in received:
        if r["route"] == "create" and r["fault"] in (HANG, DROP):
            for call in tagged(r["body"]):
                out.setdefault(call, []).append(r["fault"])
    return out


def tagged(body: Any) -> Iterator[str]:
    """Our ids in a create request's body (v1: data[]; v2: the call itself)."""
    items = body.get("data") if isinstance(body, dict) and "data" in body else [body]
    for item in items or []:
        meta = item.get("metaData") if isinstance(item, dict) else None
        if isinstance(meta, dict) and meta.get("dispatcherCallId"):
            yield str(meta["dispatcherCallId"])


def read_hashes(records: Records, ids: list[str]) -> list[dict[str, str]]:
    """The fields of each call's record the figures read (verify_at is not in CallRecord)."""
    fields = ("state", "cad_call_id", "delivered_at", "verify_at", "response")
    pipe = records.client.pipeline(transaction=False)
    for call_id in ids:
        pipe.hmget(records.keys.call(call_id), fields)
    return [{f: v.decode() for f, v in zip(fields, values, strict=True) if v is not None}
            for values in pipe.execute()]


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {"n": len(values), "p50": rnd(percentile(values, 50)),
            "p99": rnd(percentile(values, 99)), "max": rnd(max(values))}


def render(result: dict[str, Any]) -> str:
    v = result["api_version"]
    slot = (f" + one shared-rate slot ({result['shared_rate_slot_s']:g} s)"
            if result["shared_rate_slot_s"] is not None else "")
    lines = [f"v{v}: read-back at most every {result['readback_interval_s']:g} s per server{slot}; "
             f"verify delay {result['verify_after_s']:g} s; read timeout "
             f"{result['read_timeout_s']:g} s",
             f"{'side':14} {'ambiguous':>9} {'calls':>6} {'dups':>5} {'per 1,000':>9} "
             f"{'lost':>5} {'read-backs':>10}"]
    for name, s in result["sides"].items():
        lines.append(f"{name:14} {s['ambiguous_sends']:9d} {s['calls']:6d} {s['duplicates']:5d} "
                     f"{s['duplicates_per_1000_ambiguous']:9.1f} {s['lost']:5d} "
                     f"{s['readbacks']:10d}")
    d = result["sides"]["read-back"]["verifying_delay_s"]
    if d["n"]:
        lines.append(f"verifying call, lost answer -> delivered ({d['n']} calls): "
                     f"p50 {d['p50']} s, p99 {d['p99']} s, max {d['max']} s")
    for name, s in result["sides"].items():
        c = s["cad_to_record_s"]
        if c["n"]:
            lines.append(f"{name}: CAD created -> our record ({c['n']} calls): p50 {c['p50']} s, "
                         f"p99 {c['p99']} s, max {c['max']} s")
    for goal, ok in result["goals"].items():
        lines.append(f"{'met' if ok else 'NOT met'}: {goal}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
