"""The doors: HTTP ingest requests/s and p99 at fixed offered rates, and the inbox bridge's
entries/s, each against a plain baseline in the same run.

HTTP: ``python -m dispatcher web`` (waitress, 16 threads) on a free PORT with a private
Redis, offered the seed's v1 ``POST /emergency/call_911`` (one call per request) at
fixed rates by an open-loop generator (bench/loadgen.py: asyncio, 64 keep-alive
connections, latency from each request's due time). Baseline: the same waitress with a
trivial WSGI app that parses the JSON and LPUSHes it (bench/baseline_server.py). When
``wrk`` is installed (Debian: ``apt-get install -y wrk``) each server is also driven
closed-loop by ``wrk -t1 -c32`` for its ceiling.

Bridge: ``python -m dispatcher bridge``; N flat-form entries LPUSHed in one pipeline;
the time until the inbox and its processing list are both empty. Baseline: a bare
RPOP/LPUSH loop moving the same entries to another list.

The two sides run one after the other, alternating which goes first, in every run.

Waiting (``--waiting N``, its own mode): one web process and no worker, so no call gets
an outcome; N v1 requests with ``Prefer: wait=S`` are held open at once (each on its own
connection, sent again as soon as it is answered), and meanwhile other v1 requests
(without Prefer) are offered open-loop at ``--wait-rate`` for ``--duration`` seconds;
their p50/p99 are compared with the same load before the waiting requests arrived. The
goal: with 200 waiting, the others still answer within 50 ms (p99).

    .venv/bin/python bench/doors.py [--rates 500,1000,2000,3000] [--duration 3]
                                    [--entries 5000] [--runs 3] [--no-wrk] [--json]
                                    [--web-processes N]   (our door's WEB_CONCURRENCY)
    .venv/bin/python bench/doors.py --waiting 200 [--wait-s 30] [--wait-rate 200]
                                    [--duration 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import (
    API_KEY,
    COMMUNITY,
    Proc,
    client_for,
    dispatcher_proc,
    emit,
    machine,
    med,
    percentile,
    private_redis,
    product_env,
    progress,
    ratio,
    rnd,
    seed_call,
    wait_for,
)
from loadgen import build_request, open_loop, wait_http

from dispatcher.cli.embedded import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
INBOX = "dispatcher:inbox"  # the contract's default DISPATCHER_INBOX_KEY


def _body(i: int) -> bytes:
    return json.dumps({"id": COMMUNITY, "key": API_KEY, "type": "CALL_911",
                       "data": [seed_call(i)]}).encode()


def _wrk(port: int, duration: float, folder: Path) -> dict[str, Any] | None:
    exe = shutil.which("wrk")
    if exe is None:
        return None
    script = folder / "post.lua"
    body = _body(0).decode().replace("\\", "\\\\").replace('"', '\\"')
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.body = "{body}"\n')
    out = subprocess.run([exe, "-t1", "-c32", f"-d{max(1, int(duration))}s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}/emergency/call_911"],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {"requests_per_s": float(rps.group(1)) if rps else float("nan"),
            "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def _fixed_rates(port: int, rates: list[float], duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate in rates:
        res = open_loop("127.0.0.1", port,
                        lambda i, p=port: build_request("127.0.0.1", p, "/emergency/call_911",
                                                        _body(i)),
                        rate, duration)
        lat = res.pop("latencies")
        out[str(int(rate))] = {
            "achieved_per_s": round(res["achieved_per_s"]),
            "p50_ms": rnd(percentile(lat, 50) * 1000, 2),
            "p99_ms": rnd(percentile(lat, 99) * 1000, 2),
            "ok_fraction": round(res["ok"] / res["sent"], 4),
            "errors": sum(res["errors"].values()),
        }
        time.sleep(0.5)
    return out


def http_phase(folder: Path, rates: list[float], duration: float, runs: int,
               use_wrk: bool, web_processes: int = 1) -> dict[str, Any]:
    per_run: dict[str, list[dict[str, Any]]] = {"ours": [], "plain": []}
    with private_redis(folder, "redis-web") as server:
        port_ours, port_plain = free_port(), free_port()
        # No worker drains these calls: every run adds to the backlog, beyond the cap.
        env = product_env(server.url, PORT=port_ours, DISPATCHER_WEB_HOST="127.0.0.1",
                          WEB_CONCURRENCY=web_processes, DISPATCHER_MAX_BACKLOG="0")
        web = dispatcher_proc("web", env, folder)
        plain = Proc([sys.executable, str(HERE / "baseline_server.py"), "server", server.url,
                      str(port_plain)], env, folder / "plain-server.log")
        try:
            wait_http("127.0.0.1", port_ours)
            wait_http("127.0.0.1", port_plain)
            # Warm both (imports on first request, connection pools).
            open_loop("127.0.0.1", port_ours, lambda i: build_request(
                "127.0.0.1", port_ours, "/emergency/call_911", _body(i)), 200, 1)
            open_loop("127.0.0.1", port_plain, lambda i: build_request(
                "127.0.0.1", port_plain, "/emergency/call_911", _body(i)), 200, 1)
            for r in range(runs):
                order = [("ours", web, port_ours), ("plain", plain, port_plain)]
                if r % 2:
                    order.reverse()
                for name, proc, port in order:
                    progress(f"doors: http run {r + 1}/{runs}: {name}")
                    cpu0 = proc.cpu()
                    res: dict[str, Any] = {"rates": _fixed_rates(port, rates, duration)}
                    answered = sum(row["achieved_per_s"] for row in res["rates"].values())
                    # Server CPU per answered request over the whole series of rates.
                    res["cpu_ms_per_request"] = (proc.cpu() - cpu0) * 1000 / max(
                        1.0, answered * duration)
                    if use_wrk:
                        res["wrk"] = _wrk(port, duration, folder)
                    per_run[name].append(res)
        finally:
            web.stop()
            plain.stop()
    out: dict[str, Any] = {}
    for name, results in per_run.items():
        rates_out = {}
        for rate in (str(int(x)) for x in rates):
            rows = [r["rates"][rate] for r in results]
            rates_out[rate] = {k: rnd(med([row[k] for row in rows]), 2)
                               for k in ("achieved_per_s", "p50_ms", "p99_ms", "ok_fraction",
                                         "errors")}
        out[name] = {"rates": rates_out, "cpu_ms_per_request": rnd(
            med([r["cpu_ms_per_request"] for r in results]), 3)}
        wrks = [r["wrk"] for r in results if r.get("wrk")]
        if wrks:
            out[name]["wrk_closed_loop"] = {
                k: rnd(med([w[k] for w in wrks]), 2) for k in ("requests_per_s", "p99_ms",
                                                              "non_2xx")}
    return out


def sustained(rates: dict[str, Any], max_p99_ms: float | None = None) -> int:
    """Highest offered rate answered at >= 95 % with every request accepted (and, given
    ``max_p99_ms``, its p99 within it)."""
    best = 0
    for rate, row in rates.items():
        if row["achieved_per_s"] >= 0.95 * float(rate) and row["ok_fraction"] >= 0.999 and (
                max_p99_ms is None or row["p99_ms"] <= max_p99_ms):
            best = max(best, int(rate))
    return best


def _entries(n: int) -> list[bytes]:
    return [json.dumps({"caller": f"Caller {i}", "location": f"{i} Route 68",
                        "description": "Two-car collision", "postal": "350"}).encode()
            for i in range(n)]


def bridge_phase(folder: Path, entries: int, runs: int) -> dict[str, Any]:
    per_run: dict[str, list[float]] = {"ours": [], "plain": []}
    payload = _entries(entries)
    with private_redis(folder, "redis-bridge") as server:
        client = client_for(server)
        env = product_env(server.url, DISPATCHER_MAX_BACKLOG="0")  # runs x entries wait
        bridge = dispatcher_proc("bridge", env, folder)
        mover = Proc([sys.executable, str(HERE / "baseline_server.py"), "mover", server.url,
                      "bench:plain-in", "bench:plain-out"], env, folder / "mover.log")
        try:
            # Warm up: the bridge is running once it has moved a first entry.
            client.lpush(INBOX, payload[0])
            client.lpush("bench:plain-in", payload[0])
            wait_for(lambda: client.llen(INBOX) == 0 and client.llen(INBOX + ":processing") == 0
                     and client.llen("bench:plain-out") == 1, 60, what="the bridges to start")
            client.delete("bench:plain-out")
            for r in range(runs):
                sides = ["ours", "plain"] if r % 2 == 0 else ["plain", "ours"]
                for side in sides:
                    progress(f"doors: bridge run {r + 1}/{runs}: {side} x{entries}")
                    src = INBOX if side == "ours" else "bench:plain-in"
                    pipe = client.pipeline(transaction=False)
                    for raw in payload:
                        pipe.lpush(src, raw)
                    t0 = time.perf_counter()
                    pipe.execute()
                    if side == "ours":
                        wait_for(lambda: client.llen(INBOX) == 0
                                 and client.llen(INBOX + ":processing") == 0,
                                 600, 0.005, "the bridge")
                    else:
                        wait_for(lambda: client.llen("bench:plain-out") >= entries, 600,
                                 0.005, "the mover")
                        client.delete("bench:plain-out")
                    per_run[side].append(entries / (time.perf_counter() - t0))
        finally:
            bridge.stop()
            mover.stop()
            client.close()
    return {side: {"entries_per_s": round(med(v)), "per_run": [round(x) for x in v]}
            for side, v in per_run.items()}


class _Waiters:
    """``count`` connections, each with one ``Prefer: wait`` request always outstanding."""

    def __init__(self, port: int, count: int, wait_s: int) -> None:
        self.port, self.count, self.wait_s = port, count, wait_s
        self.outstanding = 0
        self.answers: list[tuple[int, float, bool]] = []  # status, seconds, Preference-Applied
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> _Waiters:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.wait_s + 15)

    async def _run(self) -> None:
        await asyncio.gather(*(self._connection(i) for i in range(self.count)))

    async def _connection(self, n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        i = 0
        while not self._stop.is_set():
            request = build_request("127.0.0.1", self.port, "/emergency/call_911",
                                    _body(1_000_000 + n * 1000 + i),
                                    {"Prefer": f"wait={self.wait_s}"})
            i += 1
            started = time.monotonic()
            self.outstanding += 1
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                applied = b"preference-applied" in head.lower()
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                self.answers.append((int(head[9:12]), time.monotonic() - started, applied))
            except (OSError, asyncio.IncompleteReadError):
                self.errors += 1
                return
            finally:
                self.outstanding -= 1
        writer.close()


def _others(port: int, rate: float, duration: float) -> dict[str, Any]:
    """Requests without Prefer, open loop: their latency."""
    res = open_loop("127.0.0.1", port, lambda i: build_request(
        "127.0.0.1", port, "/emergency/call_911", _body(i)), rate, duration)
    lat = res.pop("latencies")
    return {"offered_per_s": rate, "achieved_per_s": round(res["achieved_per_s"]),
            "p50_ms": rnd(percentile(lat, 50) * 1000, 2),
            "p99_ms": rnd(percentile(lat, 99) * 1000, 2),
            "max_ms": rnd(max(lat) * 1000 if lat else float("nan"), 2),
            "ok_fraction": round(res["ok"] / res["sent"], 4),
            "errors": sum(res["errors"].values())}


def wait_phase(folder: Path, waiting: int, wait_s: int, rate: float,
               duration: float) -> dict[str, Any]:
    """Other requests' latency alone, then with ``waiting`` requests held by Prefer: wait."""
    if duration + 3 > wait_s:
        raise SystemExit("--duration must be at least 3 s shorter than --wait-s")
    with private_redis(folder, "redis-wait") as server:
        port = free_port()
        # No worker: no call gets an outcome, so every waiting request waits its wait_s.
        env = product_env(server.url, PORT=port, DISPATCHER_WEB_HOST="127.0.0.1",
                          DISPATCHER_MAX_BACKLOG="0")
        web = dispatcher_proc("web", env, folder)
        try:
            wait_http("127.0.0.1", port)
            _others(port, rate, 1)  # warm up (imports, connection pools)
            progress(f"doors: waiting: {rate:g}/s others alone")
            alone = _others(port, rate, duration)
            progress(f"doors: waiting: {waiting} requests with Prefer: wait={wait_s}")
            waiters = _Waiters(port, waiting, wait_s).start()
            wait_for(lambda: waiters.outstanding >= waiting, 30, what="the waiting requests")
            time.sleep(1.0)  # every one is in the door, past its enqueue, waiting
            held_before = waiters.outstanding
            progress(f"doors: waiting: {rate:g}/s others beside {held_before} waiting")
            beside = _others(port, rate, duration)
            held_after = waiters.outstanding
            early = len(waiters.answers)
            # Let the first round of waiting requests end, to see how they were answered.
            wait_for(lambda: len(waiters.answers) >= waiting, wait_s + 10,
                     what="the waiting requests' answers")
            waiters.stop()
            answered = waiters.answers[:waiting]
        finally:
            web.stop()
    took = [t for _, t, _ in answered]
    return {
        "waiting_requests": waiting, "wait_s": wait_s,
        "held_while_measuring": {"at_start": held_before, "at_end": held_after,
                                 "answered_early": early},
        "waiting_answers": {
            "count": len(answered),
            "statuses": sorted({s for s, _, _ in answered}),
            "preference_applied": sum(1 for *_, a in answered if a),
            "min_s": rnd(min(took), 2), "max_s": rnd(max(took), 2),
            "errors": waiters.errors},
        "others_alone": alone, "others_beside_waiting": beside,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,2000,3000",
                        help="offered requests/s, comma-separated")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per rate")
    parser.add_argument("--entries", type=int, default=5000, help="inbox entries per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-wrk", action="store_true", help="skip the closed-loop wrk run")
    parser.add_argument("--web-processes", type=int, default=1,
                        help="WEB_CONCURRENCY of our web door (the baseline stays one process)")
    parser.add_argument("--waiting", type=int, default=0,
                        help="waiting mode: hold this many Prefer: wait requests and measure "
                             "the others (the other phases are skipped)")
    parser.add_argument("--wait-s", type=int, default=30, help="waiting mode: N of wait=N")
    parser.add_argument("--wait-rate", type=float, default=200,
                        help="waiting mode: other requests per second")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-bridge", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    folder = Path(tempfile.mkdtemp(prefix="bench-doors-"))
    if args.waiting:
        return _waiting_main(args, folder)
    result: dict[str, Any] = {
        "figure": "doors",
        "command": f"bench/doors.py --rates {args.rates} --duration {args.duration:g} "
                   f"--entries {args.entries} --runs {args.runs}"
                   + (" --no-wrk" if args.no_wrk else "")
                   + (f" --web-processes {args.web_processes}" if args.web_processes != 1
                      else ""),
        "web_processes": args.web_processes,
        "machine": machine(),
        "runs": args.runs,
        "load_generator": "open loop: bench/loadgen.py (asyncio, 64 keep-alive connections, "
                          "in the benchmark's own process)"
                          + ("; closed loop: wrk -t1 -c32 (Debian wrk 4.1)" if use_wrk else ""),
        "goals": {},
    }
    try:
        if not args.skip_http:
            http = http_phase(folder, rates, args.duration, args.runs, use_wrk,
                              args.web_processes)
            for side in http.values():
                side["sustained_per_s"] = sustained(side["rates"])
            http["sustained_ratio"] = ratio(http["ours"]["sustained_per_s"],
                                            http["plain"]["sustained_per_s"])
            if "wrk_closed_loop" in http["ours"] and "wrk_closed_loop" in http["plain"]:
                http["wrk_ratio"] = ratio(http["ours"]["wrk_closed_loop"]["requests_per_s"],
                                          http["plain"]["wrk_closed_loop"]["requests_per_s"])
            http["cpu_ratio"] = ratio(http["ours"]["cpu_ms_per_request"],
                                      http["plain"]["cpu_ms_per_request"])
            result["http"] = http
            goals = result["goals"]
            if "wrk_ratio" in http:
                goals["one process >= 0.9x the baseline closed loop (wrk)"] = bool(
                    http["wrk_ratio"] >= 0.9)
            goals["sustained (p99 <= 20 ms) >= 0.8x the baseline's"] = bool(
                sustained(http["ours"]["rates"], 20.0)
                >= 0.8 * max(1, sustained(http["plain"]["rates"], 20.0)))
            goals["server CPU per request <= 1.5x the baseline's"] = bool(
                http["cpu_ratio"] <= 1.5)
            at2000 = http["ours"]["rates"].get("2000")
            result["goals"]["HTTP door >= 2000 requests/s on 2 cores"] = bool(
                http["ours"]["sustained_per_s"] >= 2000
                or (at2000 and at2000["achieved_per_s"] >= 1900))
        if not args.skip_bridge:
            bridge = bridge_phase(folder, args.entries, args.runs)
            bridge["ratio"] = ratio(bridge["ours"]["entries_per_s"],
                                    bridge["plain"]["entries_per_s"])
            result["bridge"] = bridge
            result["goals"]["bridge >= 5000 entries/s"] = bridge["ours"]["entries_per_s"] >= 5000
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    emit(result, args.json, render)
    return 0


def _waiting_main(args: argparse.Namespace, folder: Path) -> int:
    result: dict[str, Any] = {
        "figure": "doors-waiting",
        "command": f"bench/doors.py --waiting {args.waiting} --wait-s {args.wait_s} "
                   f"--wait-rate {args.wait_rate:g} --duration {args.duration:g}",
        "machine": machine(),
        "load_generator": "waiting: one asyncio connection per waiting request; others: "
                          "bench/loadgen.py open loop (64 keep-alive connections), both in "
                          "the benchmark's own process",
        "goals": {},
    }
    try:
        result["waiting"] = w = wait_phase(folder, args.waiting, args.wait_s, args.wait_rate,
                                           args.duration)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    beside = w["others_beside_waiting"]
    result["goals"][f"others answer within 50 ms (p99) beside {args.waiting} waiting"] = bool(
        w["held_while_measuring"]["at_end"] >= args.waiting and beside["p99_ms"] < 50
        and beside["ok_fraction"] >= 0.999)
    emit(result, args.json, render_waiting)
    return 0


def render_waiting(result: dict[str, Any]) -> str:
    w = result["waiting"]
    held, answers = w["held_while_measuring"], w["waiting_answers"]
    lines = [f"waiting: {w['waiting_requests']} requests with Prefer: wait={w['wait_s']} "
             f"(held {held['at_start']} at the start of the measurement, {held['at_end']} at "
             f"its end; answered {answers['min_s']}-{answers['max_s']} s later, statuses "
             f"{answers['statuses']}, Preference-Applied {answers['preference_applied']})"]
    for name, row in (("alone", w["others_alone"]), ("beside", w["others_beside_waiting"])):
        lines.append(f"  others {name:6}: {row['achieved_per_s']}/s of {row['offered_per_s']:g}, "
                     f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, max {row['max_ms']} ms, "
                     f"ok {row['ok_fraction']}")
    for goal, ok in result["goals"].items():
        lines.append(f"{'met' if ok else 'NOT met'}: {goal}")
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    lines = []
    if "http" in result:
        http = result["http"]
        lines.append("HTTP door, offered rate -> achieved/s, p50 ms, p99 ms (ours | plain)")
        for rate, row in http["ours"]["rates"].items():
            b = http["plain"]["rates"][rate]
            lines.append(f"  {rate:>6}/s  ours {row['achieved_per_s']:7.0f} {row['p50_ms']:8.2f} "
                         f"{row['p99_ms']:9.2f}   plain {b['achieved_per_s']:7.0f} "
                         f"{b['p50_ms']:8.2f} {b['p99_ms']:9.2f}")
        lines.append(f"  sustained: ours {http['ours']['sustained_per_s']}/s, plain "
                     f"{http['plain']['sustained_per_s']}/s; with p99 <= 20 ms: ours "
                     f"{sustained(http['ours']['rates'], 20.0)}/s, plain "
                     f"{sustained(http['plain']['rates'], 20.0)}/s")
        if "cpu_ratio" in http:
            lines.append(f"  server CPU ms per request: ours {http['ours']['cpu_ms_per_request']}"
                         f", plain {http['plain']['cpu_ms_per_request']} (x{http['cpu_ratio']})")
        if "wrk_ratio" in http:
            o, p = http["ours"]["wrk_closed_loop"], http["plain"]["wrk_closed_loop"]
            lines.append(f"  wrk closed loop: ours {o['requests_per_s']:.0f}/s p99 "
                         f"{o['p99_ms']} ms, plain {p['requests_per_s']:.0f}/s p99 "
                         f"{p['p99_ms']} ms (x{http['wrk_ratio']})")
    if "bridge" in result:
        b = result["bridge"]
        lines.append(f"bridge: ours {b['ours']['entries_per_s']}/s, plain mover "
                     f"{b['plain']['entries_per_s']}/s (x{b['ratio']})")
    for goal, ok in result["goals"].items():
        lines.append(f"{'met' if ok else 'NOT met'}: {goal}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
