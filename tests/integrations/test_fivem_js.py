"""integrations/fivem/examples/server.js, the FiveM server-side JavaScript example, run by
Node against a real dispatcher.

`fivem_js_shim.cjs` stands in for FXServer's JavaScript runtime (GetConvar, exports,
RegisterCommand, GetResourceState; fetch is Node's own) and runs the example's
/report911 command. Through the door: the real `web`, `worker` and `scheduler` and the
CAD simulator. Through the resource's export: the shim's `exports.sonoran_dispatcher` is
the real Lua resource, run by fivem_harness.lua under lua5.4. Sonoran911.cs has no
runtime here (no dotnet, mcs or csc) and is not run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, COMMUNITY, Proc, base_env, free_port, wait_for
from tests.integrations.fivem_support import RESOURCE, ROOT, stack, start_web, untagged

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "integrations" / "fivem" / "examples" / "server.js"
SHIM = Path(__file__).resolve().parent / "fivem_js_shim.cjs"
SENT = re.compile(r"^911 call sent: EMERGENCY CALL (?P<kind>ADDED|QUEUED) ID: (?P<id>\d+)$", re.M)
#: What /report911 car on fire by player 7 must reach the CAD as.
FIRE = {"serverId": "1", "isEmergency": True, "caller": "Jane Player", "location": "Unknown",
        "description": "car on fire"}


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.fail("node is not installed; install Node.js 18 or newer "
                    "(apt-get install -y nodejs)")
    return exe


def run_example(node: str, url: str, extra: dict[str, str] | None = None,
                **convars: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in base_env("redis://unused").items()
           if not k.startswith(("FIVEM_CONVAR_", "SHIM_", "HARNESS_"))}
    settings = {"sonoran_dispatcher_url": url, "sonoran_communityID": COMMUNITY,
                "sonoran_apiKey": API_KEY, **convars}
    env.update({f"FIVEM_CONVAR_{k}": v for k, v in settings.items()})
    env["SHIM_COMMAND"] = '[7, "report911", ["car", "on", "fire"]]'
    env.update(extra or {})
    return subprocess.Popen([node, str(SHIM), str(EXAMPLE)], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the example still ran after {timeout}s:\n{out}") from None
    assert proc.returncode == 0, f"the example exited {proc.returncode}:\n{out}"
    assert API_KEY not in out
    return out


def the_call(sim: CadSimulator) -> dict[str, Any]:
    wait_for(lambda: len(sim.calls()) >= 1, 30, message="the call in the CAD")
    time.sleep(1.0)  # a doubled call would have arrived by now
    assert len(sim.calls()) == 1 and sim.stats()["duplicates"] == 0
    return sim.calls()[0]


def test_server_js_sends_the_call_to_the_door_and_gets_the_cads_answer(
    node: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
) -> None:
    _env, url = stack(redis_url, sim, procs)
    out = finish(run_example(node, url))
    sent = SENT.search(out)
    assert sent and sent["kind"] == "ADDED", out
    call = the_call(sim)
    assert int(sent["id"]) == call["cad_id"]
    assert untagged(call["call"]) == FIRE


def test_server_js_goes_through_the_resources_export_when_it_runs(
    node: str, lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
) -> None:
    _env, url = stack(redis_url, sim, procs)
    out = finish(run_example(node, url, {
        "SHIM_DISPATCHER": "lua", "HARNESS_LUA": lua, "HARNESS_RESOURCE": str(RESOURCE),
        "HARNESS_PYTHON": sys.executable,
    }))
    # The Lua resource made the call (its log line) and its cb(text, ok) reached the JS.
    assert re.search(r"^LUA \[sonoran_dispatcher\] call fivem-sonoran_dispatcher-1-\S+ "
                     r"accepted as \d+$", out, re.M), out
    sent = SENT.search(out)
    assert sent and sent["kind"] == "ADDED", out
    call = the_call(sim)
    assert int(sent["id"]) == call["cad_id"]
    assert untagged(call["call"]) == FIRE


def test_server_js_retries_with_the_same_key_until_the_dispatcher_answers(
    node: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
) -> None:
    env, url = stack(redis_url, sim, procs, web=False)
    started = time.monotonic()
    proc = run_example(node, url)
    # No dispatcher yet: the first attempt gets no answer, the next comes 2 s later.
    time.sleep(0.5)
    starter = threading.Thread(target=start_web, args=(procs, env))
    starter.start()
    out = finish(proc)
    starter.join()
    assert SENT.search(out), out
    assert time.monotonic() - started >= 2.0, "the first attempt failed; the retry came 2 s later"
    assert untagged(the_call(sim)["call"]) == FIRE


def test_server_js_reports_a_refusal_without_retrying(
    node: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
) -> None:
    env = base_env(redis_url, sim, PORT=str(free_port()))
    web = start_web(procs, env)
    wrong = "sk-wrong-KEY-fedcba9876543210"
    started = time.monotonic()
    out = finish(run_example(node, f"http://127.0.0.1:{env['PORT']}", sonoran_apiKey=wrong))
    assert "911 call refused: INVALID API KEY" in out
    assert time.monotonic() - started < 2, "a 400 is final: no retry"
    assert wrong not in out and wrong not in web.output()
    assert sim.received() == []
