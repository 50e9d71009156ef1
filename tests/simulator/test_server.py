"""dispatcher.simulator.server: CadSimulator's settings (credentials, latency) and serve()."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import requests

from dispatcher.simulator import CadSimulator
from tests.simulator.simkit import COMMUNITY, KEY, TIMEOUT, post_v1, v1_body


def test_set_credentials_changes_what_is_accepted(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_credentials(community_id="new-community", api_key="new-key-123")

    old = post_v1(session, sim)
    new = post_v1(session, sim, v1_body(id="new-community", key="new-key-123"))

    assert old.text == "INVALID COMMUNITY ID"
    assert new.status_code == 200


def test_latency_delays_answers_without_serialising_them() -> None:
    with CadSimulator(community_id=COMMUNITY, api_key=KEY, latency_ms=1000) as sim:
        spans: list[tuple[float, float]] = []
        statuses: list[int] = []
        lock = threading.Lock()

        def timed_post() -> None:
            started = time.monotonic()
            response = requests.post(
                f"{sim.url}/emergency/call_911", json=v1_body(), timeout=TIMEOUT
            )
            with lock:
                spans.append((started, time.monotonic()))
                statuses.append(response.status_code)

        posts = [threading.Thread(target=timed_post) for _ in range(10)]
        for t in posts:
            t.start()
        for t in posts:
            t.join()

        assert statuses == [200] * 10
        assert all(end - start >= 1.0 for start, end in spans)
        # Served one after another, the last would start after the first had ended.
        assert max(start for start, _ in spans) < min(end for _, end in spans)
        assert len({c["cad_id"] for c in sim.calls()}) == 10


def test_set_latency_changes_the_delay(sim: CadSimulator, session: requests.Session) -> None:
    sim.set_latency(120)
    started = time.monotonic()
    post_v1(session, sim)
    slow = time.monotonic() - started

    sim.set_latency(60_000)
    sim.set_latency(0)

    assert slow >= 0.12
    # A latency still in force would be a ReadTimeout.
    assert post_v1(session, sim, timeout=TIMEOUT).status_code == 200


def test_serve_prints_one_line_without_the_key_and_stops_on_sigterm() -> None:
    code = f"from dispatcher.simulator import serve; serve('127.0.0.1', 0, {COMMUNITY!r}, {KEY!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        urls = re.findall(r"http://127\.0\.0\.1:\d+", line)
        assert len(urls) == 2
        api_url, control_url = urls
        response = requests.post(f"{api_url}/emergency/call_911", json=v1_body(), timeout=TIMEOUT)
        assert response.status_code == 200
        assert requests.get(f"{control_url}/stats", timeout=TIMEOUT).json()["created"] == 1

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 0
    assert KEY not in line
    assert out == ""
    assert err == ""
