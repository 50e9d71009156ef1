"""Row "slow clients shut the door": 150 clients that send their headers one line every
2 s must not keep /healthz or a v1 ingest from answering within 1 s (waitress' default
of 100 connections let 120 of them shut the door), and a connection that sends nothing
is closed after the channel timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest
import requests

from dispatcher.http.server import CHANNEL_TIMEOUT_S, CLEANUP_INTERVAL_S
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env
from tests.http.httpkit import V1, seed_body, seed_call, start_web

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLOW_CLIENTS = 150
SLOWLORIS_S = 18.0
LINE_EVERY_S = 2.0
START = b"POST /emergency/call_911 HTTP/1.1\r\nHost: x\r\n"


def test_150_slow_clients_leave_health_and_ingest_answering(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    web = start_web(procs, base_env(redis_url, sim))
    port = int(web.url.rsplit(":", 1)[1])
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)  # never sends a byte
    started = time.monotonic()
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5)
            for _ in range(SLOW_CLIENTS)]
    for s in slow:
        s.sendall(START)
    stop = threading.Event()
    dropped: list[int] = []

    def trickle() -> None:  # one more header line per client every 2 s, never the end
        n = 0
        while not stop.wait(LINE_EVERY_S):
            n += 1
            for i, s in enumerate(slow):
                try:
                    s.sendall(f"X-Slow-{n}: {i}\r\n".encode())
                except OSError:
                    dropped.append(i)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    took: dict[str, list[float]] = {"healthz": [], "ingest": []}
    failures: list[str] = []
    try:
        time.sleep(1.0)  # every slow client is connected and mid-request
        while time.monotonic() - started < SLOWLORIS_S:
            for name, send in (
                ("healthz", lambda: requests.get(web.url + "/healthz", timeout=5)),
                ("ingest", lambda: web.post(V1, seed_body([seed_call()]), timeout=5)),
            ):
                t0 = time.monotonic()
                try:
                    answer = send()
                    if answer.status_code != 200:
                        failures.append(f"{name}: {answer.status_code} {answer.text[:100]}")
                except requests.RequestException as exc:
                    failures.append(f"{name}: {type(exc).__name__}")
                took[name].append(time.monotonic() - t0)
            time.sleep(0.5)
    finally:
        stop.set()
        trickler.join(5)
    worst = {name: max(values) for name, values in took.items()}
    print(f"\n{SLOW_CLIENTS} slow clients for {SLOWLORIS_S:.0f} s: {len(took['healthz'])} "
          f"probes each, slowest /healthz {worst['healthz'] * 1000:.0f} ms, slowest ingest "
          f"{worst['ingest'] * 1000:.0f} ms, slow clients dropped: {len(set(dropped))}")
    assert not failures, failures[:5]
    assert worst["healthz"] < 1.0 and worst["ingest"] < 1.0, worst
    assert not dropped, "a client that keeps sending is not cut off"

    # The idle connection is closed by the channel timeout (plus one cleanup pass).
    idle.settimeout(CHANNEL_TIMEOUT_S + 2 * CLEANUP_INTERVAL_S + 5 - (time.monotonic() - started))
    assert idle.recv(1) == b"", "an idle connection is closed after the channel timeout"
    assert time.monotonic() - started >= CHANNEL_TIMEOUT_S - 1
    idle.close()
    for s in slow:
        s.close()


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1])


def test_slow_large_bodies_wait_on_disk_not_in_memory(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    """300 clients that send all but the last bytes of a 256 KiB body and then stall: the
    bodies wait in temporary files, so the web process's memory hardly grows."""
    web = start_web(procs, base_env(redis_url, sim))
    port = int(web.url.rsplit(":", 1)[1])
    pid = web.proc.proc.pid
    before = _rss_kb(pid)
    size = 256 * 1024
    head = (f"POST {V1} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    clients = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(head + b" " * (size - 100))
            clients.append(s)
        time.sleep(2.0)  # waitress has read what was sent
        grown_mb = (_rss_kb(pid) - before) / 1024
        ok = requests.get(web.url + "/healthz", timeout=5)
        assert ok.status_code == 200
    finally:
        for s in clients:
            s.close()
    print(f"300 stalled 256 KiB bodies: web RSS +{grown_mb:.1f} MB")
    assert grown_mb < 40, f"the stalled bodies are held in memory: +{grown_mb:.1f} MB"
