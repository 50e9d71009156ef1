"""The copy-paste examples in examples/ (and docs/game-servers.md) really queue a call.

Each Python and Node example runs as a user would run it, against the real `web`,
`bridge`, `worker` and `scheduler` processes and the CAD simulator; each call must
reach the CAD exactly once. Enqueue.cs is not run: there is no .NET SDK here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, free_port, run_cli, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DOC = ROOT / "docs" / "game-servers.md"
ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
TICKET = re.compile(r"^9\d{15}$")

#: The call every example makes, as the CAD must receive it.
SEED_CALL = {
    "serverId": "1", "isEmergency": True, "caller": "Jane Doe",
    "location": "Route 68 / Joshua Rd", "description": "Two-car collision",
    "metaData": {"postal": "350", "plate": "8ABC123"},
}
#: (file, what it prints: the HTTP door's ticket, the Python API's id, or None) in order.
RUNNABLE = [
    ("enqueue_http.py", TICKET),
    ("enqueue_call.py", ULID),
    ("enqueue_inbox.py", None),
    ("enqueue_http.mjs", TICKET),
    ("enqueue_inbox.mjs", None),
]


def _command(name: str) -> list[str]:
    if name.endswith(".mjs"):
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not installed; install Node.js 18 or newer "
                        "(apt-get install -y nodejs)")
        return [node, str(EXAMPLES / name)]
    return [sys.executable, str(EXAMPLES / name)]


@pytest.mark.integration
def test_every_example_reaches_the_cad_exactly_once(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    env = base_env(redis_url, sim, PORT=str(free_port()))
    for process in ("worker", "scheduler", "bridge", "web"):
        procs([process], env)
    health = f"http://127.0.0.1:{env['PORT']}/healthz"

    def web_up() -> bool:
        try:
            with urllib.request.urlopen(health, timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_for(web_up, 30, message="the web process")
    example_env = {**env, "DISPATCHER_URL": f"http://127.0.0.1:{env['PORT']}"}

    for count, (name, prints_id) in enumerate(RUNNABLE, start=1):
        run = subprocess.run(_command(name), env=example_env, capture_output=True, text=True,
                             timeout=30, cwd=EXAMPLES)
        assert run.returncode == 0, f"{name} failed:\n{run.stdout}\n{run.stderr}"
        assert env["SONORAN_API_KEY"] not in run.stdout + run.stderr
        wait_for(lambda n=count: len(sim.calls()) >= n, 30, message=f"the call of {name}")
        assert len(sim.calls()) == count, f"{name} made more than one call"
        sent = sim.calls()[-1]["call"]
        # The dispatcher tags every call it sends (metaData.dispatcher*): not the example's.
        sent["metaData"] = {k: v for k, v in sent["metaData"].items()
                            if not k.startswith("dispatcher")}
        assert sent == SEED_CALL, name
        if prints_id is not None:
            call_id = run.stdout.strip()
            assert prints_id.match(call_id), f"{name} printed {run.stdout!r}"
            status = run_cli(["status", call_id, "--json"], env)
            assert json.loads(status.stdout)["status"] == "delivered", name
        else:
            assert run.stdout.startswith("pushed example-"), f"{name} printed {run.stdout!r}"

    # Every example sends the same call, so the simulator's own duplicate count does not
    # apply; one call per example, counted after each run and once more here, does.
    time.sleep(1.0)  # a doubled call would have arrived by now
    assert len(sim.calls()) == len(RUNNABLE)


def test_the_doc_shows_every_example_verbatim() -> None:
    doc = DOC.read_text()
    files = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in {".py", ".mjs", ".cs"})
    assert files == sorted([name for name, _ in RUNNABLE] + ["Enqueue.cs"])
    for name in files:
        text = (EXAMPLES / name).read_text()
        assert text.strip() in doc, f"docs/game-servers.md does not show {name} as it is now"
