"""`dispatcher run` on a machine without Redis starts an embedded one (default REDIS_URL).

The machine running the suite has a Redis on 6379, so the test runs in a network
namespace of its own (``unshare -n``, root only), where localhost:6379 answers nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    import redis
    from dispatcher.simulator import CadSimulator

    sim = CadSimulator(community_id="c", api_key="key-12345678").start()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(SONORAN_COMMUNITY_ID="c", SONORAN_API_KEY="key-12345678",
               SONORAN_API_URL=sim.url, DISPATCHER_MAX_RATE="0", PORT="18000")
    run = subprocess.Popen([sys.executable, "-m", "dispatcher", "run"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = run.stdout.readline()
    print("FIRST:", first.strip(), flush=True)
    enq = subprocess.run([sys.executable, "-m", "dispatcher", "enqueue", "--caller", "Jane",
                          "--location", "Route 68", "--description", "Crash"], env=env,
                         capture_output=True, text=True)
    print("ENQUEUE:", enq.returncode, enq.stderr.strip(), flush=True)
    deadline = time.time() + 60
    while not sim.calls() and time.time() < deadline:
        time.sleep(0.2)
    print("DELIVERED:", len(sim.calls()), flush=True)
    aof = redis.Redis(port=6379).config_get("appendonly")["appendonly"]
    print("APPENDONLY:", aof, flush=True)
    run.send_signal(signal.SIGTERM)
    print("EXIT:", run.wait(60), flush=True)
    sim.stop()
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a network namespace")
def test_run_without_redis_starts_an_embedded_one(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c",
         f"ip link set lo up 2>/dev/null; exec {sys.executable} probe.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    out = done.stdout
    assert "started an embedded Redis on 127.0.0.1:6379" in out, out + done.stderr
    assert "ENQUEUE: 0" in out, out
    assert "DELIVERED: 1" in out, out
    assert "APPENDONLY: yes" in out, out
    assert "EXIT: 0" in out, out
    assert any((tmp_path / ".dispatcher" / "redis").rglob("*.aof*")), "data kept on disk"
