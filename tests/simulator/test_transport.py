"""dispatcher.simulator.transport: keep-alive, and connections cut on stop and refuse."""

from __future__ import annotations

import http.client
import json
import threading
import time

import requests

from dispatcher.simulator import CadSimulator
from tests.simulator.simkit import COMMUNITY, KEY, TIMEOUT, post_v1, v1_body


def test_keep_alive_serves_several_requests_on_one_connection(sim: CadSimulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=TIMEOUT)
    try:
        statuses = []
        sockets = []
        for _ in range(3):
            conn.request("POST", "/emergency/call_911", body=json.dumps(v1_body()))
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            sockets.append(conn.sock)
    finally:
        conn.close()

    assert statuses == [200, 200, 200]
    assert sockets[0] is not None
    assert all(s is sockets[0] for s in sockets)


def test_hang_does_not_block_other_connections(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.set_fault("hang", count=1)
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            post_v1(requests.Session(), sim, timeout=2.0)
        except requests.RequestException as exc:
            errors.append(exc)

    hanging = threading.Thread(target=hang)
    hanging.start()
    deadline = time.monotonic() + TIMEOUT
    while not sim.received() and time.monotonic() < deadline:
        time.sleep(0.01)

    assert post_v1(session, sim).status_code == 200

    sim.clear_faults()  # ends the hang: the connection closes without an answer
    hanging.join(timeout=TIMEOUT)
    assert not hanging.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], requests.ConnectionError)


def test_stop_cuts_a_hanging_connection() -> None:
    sim = CadSimulator(community_id=COMMUNITY, api_key=KEY).start()
    sim.set_fault("hang")
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            post_v1(requests.Session(), sim)
        except requests.RequestException as exc:
            errors.append(exc)

    client = threading.Thread(target=hang)
    client.start()
    deadline = time.monotonic() + TIMEOUT
    while not sim.received() and time.monotonic() < deadline:
        time.sleep(0.01)

    # The hang has no end of its own: stop() returns only by cutting the connection.
    stopping = threading.Thread(target=sim.stop)
    stopping.start()
    stopping.join(timeout=TIMEOUT)

    assert not stopping.is_alive()
    client.join(timeout=TIMEOUT)
    assert not client.is_alive()
    assert len(errors) == 1
