"""`dispatcher run` (every process in one command) and the embedded Redis it falls back to."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from dispatcher.cli.embedded import EmbeddedRedis, free_port
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, run_cli, wait_for

pytestmark = pytest.mark.integration


def test_run_starts_every_process_delivers_and_stops_cleanly_on_sigterm(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    port = free_port()
    env = base_env(redis_url, sim, PORT=port)
    run = procs(["run"], env, name="run")
    enq = run_cli(["enqueue", "--caller", "Jane", "--location", "Route 68",
                   "--description", "Crash"], env)
    assert enq.returncode == 0, enq.stderr
    wait_for(lambda: len(sim.calls()) == 1, 60, message="delivery through `run`")
    client = redis.Redis.from_url(redis_url)
    client.lpush("dispatcher:inbox", json.dumps({"caller": "Inbox", "location": "x",
                                                  "description": "y"}))
    wait_for(lambda: len(sim.calls()) == 2, 60, message="the bridge runs too")
    import requests

    wait_for(lambda: _ok(f"http://127.0.0.1:{port}/healthz"), 30, message="web runs too")
    run.signal(signal.SIGTERM)
    run.proc.wait(60)
    assert run.proc.returncode == 0, run.output()[-3000:]
    time.sleep(0.5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def _ok(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_run_refuses_to_start_without_credentials(redis_url: str) -> None:
    env = base_env(redis_url)
    env.pop("SONORAN_API_KEY")
    done = run_cli(["run"], env, timeout=30)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert "SONORAN_API_KEY" in done.stderr


def test_embedded_redis_keeps_calls_on_disk_across_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    server = EmbeddedRedis(folder, port=free_port()).start()
    try:
        client = redis.Redis(port=server.port)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.set("dispatcher:probe", "kept")
        server.stop()
        server.start()
        assert redis.Redis(port=server.port).get("dispatcher:probe") == b"kept"
        assert any(folder.rglob("*.aof*")), "an append-only file on disk"
    finally:
        server.stop()


@pytest.mark.parametrize("missing", ["SONORAN_COMMUNITY_ID", "SONORAN_API_KEY"])
def test_worker_refuses_to_start_without_credentials(redis_url: str, missing: str) -> None:
    env = base_env(redis_url)
    env.pop(missing)
    done = run_cli(["worker"], env, timeout=60)
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and missing in lines[0], lines


def test_plain_celery_command_also_refuses_without_credentials(redis_url: str) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = base_env(redis_url)
    env.pop("SONORAN_API_KEY")
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "workers", "worker"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "SONORAN_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr
