"""Redis's own counters around a measurement: commands by name, round trips, memory.

Pure functions over what redis-py's ``client.info("all")`` returns (INFO parsed into a
dict; ``cmdstat_<name>`` entries are dicts with ``calls``), so they are unit-tested
without a server (tests/unit/test_bench_redisstats.py).

What each counter counts, checked on the redis-server the benchmarks run (6.2.14): an
EVAL whose script runs three commands adds 4 to ``INFO commandstats`` (eval, and each
command inside) and 4 to ``total_commands_processed`` too, so the two agree and both
count the commands Lua runs (and each command inside MULTI/EXEC, plus MULTI and EXEC).
``total_reads_processed`` counts the reads the server made from client sockets: one per
request a client sends and waits for (a single command, a whole pipeline, a whole
MULTI/EXEC block, an EVALSHA with all its inner commands), so it is the round trips.
A snapshot is one INFO command and one read; ``delta`` takes them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Commands that run a server-side script (their inner commands are counted as well).
SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")


@dataclass(frozen=True)
class Counters:
    """Redis's cumulative counters at one moment (or the difference of two moments)."""

    #: calls per command name, lower case (``INFO commandstats``)
    commands: dict[str, int] = field(default_factory=dict)
    #: ``INFO stats`` total_commands_processed
    total_commands: int = 0
    #: ``INFO stats`` total_reads_processed: client round trips
    reads: int = 0
    #: ``INFO memory`` used_memory, bytes
    used_memory: int = 0


def counters(info: Mapping[str, Any]) -> Counters:
    """The counters in one parsed ``INFO all`` (missing sections count as zero)."""
    commands: dict[str, int] = {}
    for key, value in info.items():
        if key.startswith("cmdstat_") and isinstance(value, Mapping):
            commands[key[len("cmdstat_"):].lower()] = int(value.get("calls", 0))
    return Counters(commands, int(info.get("total_commands_processed", 0)),
                    int(info.get("total_reads_processed", 0)), int(info.get("used_memory", 0)))


def delta(before: Counters, after: Counters, snapshots: int = 1) -> Counters:
    """What happened between two snapshots, without the snapshots' own INFO commands.

    An INFO command's call is counted after it answers, and its read before: between
    two snapshots, the first one's INFO command and the second one's read are inside.
    ``snapshots`` is how many INFO commands (and reads) to take out: 1 for two
    consecutive snapshots."""
    commands = {}
    for name in sorted(set(before.commands) | set(after.commands)):
        n = after.commands.get(name, 0) - before.commands.get(name, 0)
        if name == "info":
            n -= snapshots
        if n:
            commands[name] = n
    return Counters(commands, after.total_commands - before.total_commands - snapshots,
                    after.reads - before.reads - snapshots,
                    after.used_memory - before.used_memory)


def per_call(d: Counters, calls: int, top: int | None = None) -> dict[str, Any]:
    """Commands, round trips and scripts per call; ``by_command`` the commands by name
    (most first; the ``top`` most, the rest summed as ``other``)."""
    if calls <= 0:
        raise ValueError("calls must be positive")
    ranked = sorted(d.commands.items(), key=lambda kv: (-kv[1], kv[0]))
    by_command = {name: round(n / calls, 3) for name, n in ranked[:top]}
    if top is not None and len(ranked) > top:
        by_command["other"] = round(sum(n for _, n in ranked[top:]) / calls, 3)
    return {
        "commands": round(sum(d.commands.values()) / calls, 3),
        "round_trips": round(d.reads / calls, 3),
        "scripts": round(sum(d.commands.get(c, 0) for c in SCRIPT_COMMANDS) / calls, 3),
        "total_commands_processed": round(d.total_commands / calls, 3),
        "by_command": by_command,
    }
