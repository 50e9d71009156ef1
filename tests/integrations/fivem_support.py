"""What the FiveM tests share: the harness process, the stack it talks to, the answers.

`fivem_harness.lua` stands in for FXServer (convars, PerformHttpRequest over real HTTP,
exports, timers, a connected client) and loads the resource's own files through its
fxmanifest.lua; `Harness` runs it as a subprocess and reads its output as it comes.
`stack` starts the real `web`, `worker` and `scheduler` processes against the CAD
simulator. The fixtures (`lua`, `harnesses`) are in this folder's conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, COMMUNITY, Proc, base_env, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
RESOURCE = ROOT / "integrations" / "fivem" / "sonoran_dispatcher"
HARNESS = Path(__file__).resolve().parent / "fivem_harness.lua"
INSTALL = "apt-get update && apt-get install -y lua5.4 lua-dkjson"
#: The id the door answers for a queued call: our ULID, or a numeric ticket (>= 9e15).
QUEUED = re.compile(r"^EMERGENCY CALL QUEUED ID: (?P<id>[0-9A-HJKMNP-TV-Z]{26}|9\d{15,})$")
ADDED = re.compile(r"^EMERGENCY CALL ADDED ID: (?P<id>\d+)$")

JANE = ["Jane Doe", "Route 68 / Joshua Rd", "Two-car collision", 350, "8ABC123"]
#: What the seed's call911 sends for JANE with the default serverId.
JANE_SEED_CALL = {
    "serverId": "1", "isEmergency": True, "caller": "Jane Doe",
    "location": "Route 68 / Joshua Rd", "description": "Two-car collision",
    "metaData": {"postal": "350", "plate": "8ABC123"},
}


def untagged(call: dict[str, Any]) -> dict[str, Any]:
    """The call as the CAD got it, without the tags the dispatcher adds to every call."""
    meta = {k: v for k, v in call.get("metaData", {}).items() if not k.startswith("dispatcher")}
    out = {k: v for k, v in call.items() if k != "metaData"}
    if meta:
        out["metaData"] = meta
    return out


def answer(result: dict[str, Any]) -> tuple[str, bool]:
    """call911's callback arguments, checked to be exactly the official two: (text, ok)."""
    assert result["argc"] == 2, result
    text, ok = result["args"]
    assert isinstance(text, str) and isinstance(ok, bool), result
    return text, ok


class Harness:
    """fivem_harness.lua as a subprocess whose output lines are read as they come."""

    def __init__(self, lua: str, url: str, calls: list[list[Any]],
                 extra_env: dict[str, str] | None = None, **convars: str | None) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FIVEM_CONVAR_", "HARNESS_"))}
        settings = {
            "sonoran_dispatcher_url": url,
            "sonoran_communityID": COMMUNITY,
            "sonoran_apiKey": API_KEY,
            "sonoran_dispatcher_retry_min_ms": "300",
            "sonoran_dispatcher_retry_max_ms": "1000",
            **convars,
        }
        env.update({f"FIVEM_CONVAR_{k}": v for k, v in settings.items() if v is not None})
        env["HARNESS_PYTHON"] = sys.executable
        env["HARNESS_CALLS"] = json.dumps(calls)
        env["HARNESS_TIMEOUT_MS"] = "45000"
        env.update(extra_env or {})
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            [lua, str(HARNESS), str(RESOURCE)], env=env, cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float = 20) -> str:
        """The first output line matching ``pattern`` (a regex), waiting for it."""
        deadline = time.time() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.time()
                if left <= 0 or self._eof:
                    raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}")
                self._changed.wait(left)

    def finish(self, timeout: float = 45) -> dict[int, dict[str, Any]]:
        """Wait for the harness to exit 0; the callback results by call index (1-based)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"harness still running after {timeout}s:\n{self.output}") from None
        self._reader.join(5)
        assert code == 0, f"harness exited {code}:\n{self.output}"
        return self.results()

    def results(self) -> dict[int, dict[str, Any]]:
        """Each callback's {"index", "argc", "args"} by call index."""
        found = {}
        for line in self.lines:
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
                found[result["index"]] = result
        return found

    def posts(self) -> int:
        return sum(1 for line in self.lines if line.startswith("HARNESS POST "))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def start_web(procs: Callable[..., Proc], env: dict[str, str]) -> Proc:
    web = procs(["web"], env)
    health = f"http://127.0.0.1:{env['PORT']}/healthz"

    def up() -> bool:
        try:
            with urllib.request.urlopen(health, timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_for(up, 30, message=f"the web process on {health}")
    return web


def stack(redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
          web: bool = True) -> tuple[dict[str, str], str]:
    env = base_env(redis_url, sim, PORT=str(free_port()))
    procs(["worker"], env)
    procs(["scheduler"], env)
    if web:
        start_web(procs, env)
    return env, f"http://127.0.0.1:{env['PORT']}"


def events(h: Harness, name: str) -> list[list[Any]]:
    """The arguments of every ``name`` event the harness saw raised, in order."""
    found = [json.loads(line[len("EVENT "):]) for line in h.lines if line.startswith("EVENT ")]
    return [e["args"] for e in found if e["name"] == name]
