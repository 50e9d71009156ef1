"""dispatcher.cad over the real network path: sockets, urllib3's stream, the simulator.

Every answer class is unit-tested against a fake session (tests/unit/test_cad.py); these
check what only a real connection shows.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dispatcher.cad import CadClient, Delivered
from dispatcher.call import Call
from dispatcher.errors import Ambiguous, DeliveryError, PermanentError, RetryableError
from dispatcher.settings import Secret, Settings
from dispatcher.simulator import FIRST_CALL_ID, CadSimulator
from tests.conftest import API_KEY, COMMUNITY, SEED_CALL

pytestmark = pytest.mark.integration

#: A test that has not finished in this long hangs (not a measured bound).
HANG_S = 30.0


def settings(url: str, **overrides: Any) -> Settings:
    return Settings(api_url=url, community_id=COMMUNITY, api_key=Secret(API_KEY),
                    read_timeout_s=0.5, connect_timeout_s=0.5, **overrides)


@pytest.fixture
def call() -> Call:
    return Call.parse(SEED_CALL).with_envelope("01JCALL0000000000000000000", 1_700_000_000.0)


@pytest.mark.parametrize("version", [1, 2])
def test_a_call_reaches_the_simulator_and_its_answer_comes_back(
    sim: CadSimulator, call: Call, version: int
) -> None:
    result = CadClient(settings(sim.url, api_version=version)).send(call)

    assert isinstance(result, Delivered) and result.cad_call_id == str(FIRST_CALL_ID)
    [entry] = sim.received()
    assert entry["version"] == version and entry["status"] == 200
    assert sim.calls()[0]["call"]["caller"] == SEED_CALL["caller"]


def test_a_rejected_key_is_permanent_over_the_wire(sim: CadSimulator, call: Call) -> None:
    sim.set_credentials(api_key="rotated-key")

    with pytest.raises(PermanentError, match="INVALID API KEY"):
        CadClient(settings(sim.url)).send(call)


FAULTS: dict[str, dict[str, Any]] = {
    "refuse": {}, "reset": {"count": 1}, "commit_then_drop": {"count": 1},
    "hang": {"count": 1, "max_s": 5},
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_real_network_failures_are_retryable(sim: CadSimulator, call: Call, kind: str) -> None:
    sim.set_fault(kind, **FAULTS[kind])

    with pytest.raises(RetryableError) as info:
        CadClient(settings(sim.url)).send(call)

    assert info.value.status_code is None


@pytest.fixture
def dripping_cad() -> Iterator[str]:
    """A bare HTTP server that sends a 200's headers, then one body byte every 50 ms."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.05)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 4000\r\n\r\n")
                while not stop.wait(0.05):
                    try:
                        conn.sendall(b"E")
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(2)
    listener.close()


def test_a_dripping_answer_ends_at_the_request_deadline(dripping_cad: str, call: Call) -> None:
    # Each byte arrives well within the read timeout, so only the deadline ends the read
    # (the whole answer would take 200 s).
    client = CadClient(settings(dripping_cad))
    outcome: list[object] = []

    def send() -> None:
        try:
            outcome.append(client.send(call))
        except DeliveryError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    worker.join(HANG_S)

    assert not worker.is_alive(), "still reading: the request deadline did not end it"
    # The request was written: its outcome is unknown, so the call is checked, not re-sent.
    assert isinstance(outcome[0], Ambiguous) and "in time" in str(outcome[0])


class _ForwardingProxy(BaseHTTPRequestHandler):
    """A plain HTTP proxy: takes an absolute-URI request and forwards it (counts them)."""

    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _ForwardingProxy.seen.append(self.path)
        forwarded = urllib.request.Request(self.path, data=body, method="POST", headers={
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")})
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # not itself
        with direct.open(forwarded, timeout=5) as answer:
            data = answer.read()
            self.send_response(answer.status)
            for k, v in answer.headers.items():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


def test_the_environments_proxy_and_no_proxy_apply_though_read_once(
    sim: CadSimulator, call: Call, monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    _ForwardingProxy.seen = []
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                     "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_port}")
        assert isinstance(CadClient(settings(sim.url)).send(call), Delivered)
        assert _ForwardingProxy.seen == [f"{sim.url}/emergency/call_911"]

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert isinstance(CadClient(settings(sim.url)).send(call), Delivered)
        assert len(_ForwardingProxy.seen) == 1  # straight to the CAD this time
        assert len(sim.calls()) == 2
    finally:
        proxy.shutdown()
        proxy.server_close()
