"""End to end in a real headless browser: Debian's chromium, driven by playwright-core
(tests/ops/browser/ops_page.js), against the real worker, scheduler and web processes
and the CAD simulator over HTTP.

A call is dead-lettered because the worker runs with a wrong API key; the operator
fixes the key (the worker restarts with the right one), logs in on the page, finds the
call, checks that a POST without the CSRF token is refused, clicks Replay, and watches
the call lookup until it says delivered; the CAD must then hold the call exactly once.
The screenshot of the page is saved to docs/ops-page.png.

Missing prerequisites FAIL the test (they never skip it); install them with
BROWSER_INSTALL below.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from dispatcher.history import KEEP, SAMPLE_EVERY_S, History, Sample
from dispatcher.simulator import CadSimulator
from tests.conftest import ROOT, Proc, base_env, free_port, wait_for
from tests.ops.conftest import OPS_TOKEN, enqueue, start_web, stats, status

pytestmark = pytest.mark.integration

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "ops-page.png"
BROWSER_INSTALL = ("apt-get update && apt-get install -y chromium && "
                   "npm ci --prefix tests/ops/browser")
XSS_CALLER = "<img src=x onerror=alert(1)> Bobby'); DROP TABLE calls;--"


def require_browser() -> str:
    """The node binary, or a failure that says how to install what is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js 20+ is missing (the browser test drives chromium with "
                    "playwright-core). Install Node.js 20+, then: " + BROWSER_INSTALL,
                    pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing. Run: {BROWSER_INSTALL}", pytrace=False)
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        pytest.fail("playwright-core is not installed in tests/ops/browser. Run: "
                    + BROWSER_INSTALL, pytrace=False)
    return node


def seed_last_hour(redis_url: str) -> None:
    """An hour of history before the test (an outage and its recovery), so the chart in
    the screenshot has something to show; the scheduler appends the real samples."""
    client = redis.Redis.from_url(redis_url)
    try:
        history = History(client)
        start = time.time() - KEEP * SAMPLE_EVERY_S
        delivered = 0
        for i in range(KEEP - 3):
            minute = i * SAMPLE_EVERY_S / 60
            outage = 20 <= minute < 35
            calm = round(2 + 2 * math.sin(i / 11))
            depth = round(40 * math.sin((minute - 20) / 15 * math.pi)) if outage else calm
            delivered += 0 if outage else (4 if 35 <= minute < 40 else 1)
            history.append(Sample(start + i * SAMPLE_EVERY_S, max(depth, 0), delivered, 0))
    finally:
        client.close()


def test_replay_clicked_on_the_page_delivers_the_call(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    node = require_browser()
    right = base_env(redis_url, sim, DISPATCHER_OPS_TOKEN=OPS_TOKEN)
    wrong = {**right, "SONORAN_API_KEY": "sk-wrong-key-0000"}
    seed_last_hour(redis_url)  # before the scheduler appends its first sample
    worker = procs(["worker"], wrong)
    procs(["scheduler"], right)
    web = start_web(procs, {**right, "PORT": str(free_port())})

    call_id = enqueue(right, "Jane Doe", "Route 68 / Joshua Rd", "Two-car collision")
    xss_id = enqueue(right, XSS_CALLER, "Paleto Bay", "Shots fired <b>near</b> the bank")
    try:
        wait_for(lambda: stats(right)["dead"] == 2, 60, message="two dead letters")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {stats(right)}\n{worker.output()[-3000:]}") from None
    assert status(right, call_id)["reason"] == "rejected"
    assert sim.calls() == []

    # The operator fixes the key: the worker restarts with the right one.
    worker.stop()
    procs(["worker"], right)
    wait_for(lambda: web.health()["workers"]["alive"] == 1, 60, message="the new worker")

    SCREENSHOT.parent.mkdir(exist_ok=True)
    shot = SCREENSHOT.with_suffix(".tmp.png")
    args = {"url": web.url, "token": OPS_TOKEN, "replay_id": call_id, "xss_id": xss_id,
            "xss_caller": XSS_CALLER, "screenshot": str(shot), "timeout_ms": 60000}
    run = subprocess.run([node, "ops_page.js", json.dumps(args)], cwd=BROWSER_DIR,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"browser run failed:\n{run.stderr}\n{run.stdout}"
    seen = json.loads(run.stdout.strip().splitlines()[-1])

    assert seen["wrong_token_refused"] is True
    assert seen["csrf_less_status"] == 403
    assert seen["notice"].startswith("Replayed 1 dead letter")
    assert seen["xss_cell"] == XSS_CALLER
    assert seen["dialogs"] == [], "a script ran on the page"
    assert seen["dead_before"] == "2" and seen["dead_after"] == "1"
    assert "delivered" in seen["lookup"] and "Jane Doe" in seen["lookup"]

    (delivered,) = sim.calls()
    assert delivered["call"]["caller"] == "Jane Doe"
    final = status(right, call_id)
    assert final["status"] == "delivered" and final["replays"] == 1
    assert final["cad_call_id"] == str(delivered["cad_id"])
    assert f"CAD call {delivered['cad_id']}" in seen["lookup"]

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shot.replace(SCREENSHOT)

