"""The passthrough of a real ``web`` process in front of the CAD simulator: requests of the
CAD's shapes that no route of ours knows reach the configured CAD, and its answer comes
back unchanged (dispatcher.http.passthrough, cadbudget, ticketswap).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from dispatcher.simulator import CadSimulator
from dispatcher.simulator.answers import proxy_page
from tests.conftest import API_KEY, COMMUNITY, Proc, base_env
from tests.http.httpkit import Web, start_web

pytestmark = pytest.mark.integration

BEARER = {"Authorization": f"Bearer {API_KEY}"}
OTHER_KEY = "sk-other-community-KEY-9876543210"
TICKET = 9_000_000_000_000_042
ULID = "01JPASSTHROUGH0000000000042"


@pytest.fixture(scope="module")
def cad() -> Iterator[CadSimulator]:
    simulator = CadSimulator(community_id=COMMUNITY, api_key=API_KEY).start()
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def door(redis_base_url: str, cad: CadSimulator,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One web process in front of the simulator, logging at DEBUG (the key test reads it)."""
    logs: Path = tmp_path_factory.mktemp("passthrough")
    started: list[Proc] = []

    def start(args: list[str], env: dict[str, str], name: str | None = None) -> Proc:
        p = Proc(args, env, logs / f"{name or args[0]}.log")
        started.append(p)
        return p

    env = base_env(redis_base_url, cad, LOG_LEVEL="DEBUG", DISPATCHER_MAX_RATE="1",
                   DISPATCHER_READ_TIMEOUT_S="1")
    try:
        yield start_web(start, env)
    finally:
        for p in started:
            p.stop(timeout=10)


@pytest.fixture(autouse=True)
def fresh(cad: CadSimulator, rclient: redis.Redis) -> None:
    """Each test: an empty Redis database (rclient) and a simulator without records."""
    cad.reset()


def v1_body(kind: str, data: list[Any], key: str = API_KEY) -> bytes:
    return json.dumps({"id": COMMUNITY, "key": key, "type": kind, "data": data},
                      separators=(",", ":")).encode()


def seed_ticket(rclient: redis.Redis, state: str, cad_id: str | None = None) -> None:
    """A ticket record as enqueue.lua will write it (allocation lands there)."""
    rclient.set(f"dispatcher:ticket:{TICKET}", ULID)
    rclient.hset(f"dispatcher:call:{ULID}", mapping={"state": state, "ticket": str(TICKET),
                                                     **({"cad_call_id": cad_id} if cad_id else {})})


def raw_request(web: Web, method: str, target: str, headers: dict[str, str] | None = None
                ) -> tuple[int, bytes]:
    """A request whose target goes on the wire exactly as given (no client normalising)."""
    host, port = web.url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host.removeprefix("http://"), int(port), timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


# -- passed and answered unchanged -------------------------------------------------------

def test_v1_and_v2_answers_are_the_cads_own(door: Web, cad: CadSimulator) -> None:
    body = v1_body("GET_CALLS", [{"serverId": 1, "closedLimit": 0}])
    ours = door.post("/emergency/get_calls", body)
    direct = requests.post(cad.url + "/emergency/get_calls", data=body, timeout=5)
    assert (ours.status_code, ours.content, ours.headers["Content-Type"]) == \
        (direct.status_code, direct.content, direct.headers["Content-Type"])
    assert ours.json()["emergencyCalls"] == []

    v2 = requests.get(door.url + "/v2/emergency/servers/1/calls?closedLimit=0&type=1",
                      headers=BEARER, timeout=5)
    assert v2.status_code == 200 and "EmergencyCalls" in v2.json()
    first, _direct, second = cad.received()
    assert first["raw"] == body.decode().replace(API_KEY, "***"), "the body byte for byte"
    assert second["path"] == "/v2/emergency/servers/1/calls?closedLimit=0&type=1"
    assert second["method"] == "GET" and second["status"] == 200, "the client's Bearer key"


def test_the_cads_refusals_and_error_pages_pass_unchanged(door: Web, cad: CadSimulator) -> None:
    wrong = door.post("/general/get_version", v1_body("GET_VERSION", [], key="nope"))
    assert (wrong.status_code, wrong.text) == (400, "INVALID API KEY")
    assert door.post("/general/get_version", v1_body("GET_VERSION", [])).text == "3"

    cad.set_fault("error", status=500, route="other", count=1)
    # (another key: ours just took the shared rate limiter's slot for the next second)
    page = door.post("/general/get_version", v1_body("GET_VERSION", [], key=OTHER_KEY))
    assert (page.status_code, page.content) == (500, proxy_page(500))
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"

    cad.set_fault("ratelimit", retry_after=7, route="other", count=1)
    limited = requests.get(door.url + "/v2/general/version", headers=BEARER, timeout=5)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited.content == proxy_page(429), "the CAD's (its proxy's) body, not ours"

    cad.set_fault("empty", status=502, route="other", count=1)
    empty = requests.get(door.url + "/v2/general/version", headers=BEARER, timeout=5)
    assert (empty.status_code, empty.content) == (502, b"")
    assert "Content-Type" not in empty.headers, "no content type the CAD did not send"


def test_a_cad_that_does_not_answer_is_a_504_within_the_read_timeout(
        door: Web, cad: CadSimulator) -> None:
    cad.set_fault("hang", route="other")
    try:
        started = time.monotonic()
        answer = door.post("/general/get_version", v1_body("GET_VERSION", []))
        assert time.monotonic() - started < 5
    finally:
        cad.clear_faults()
    assert (answer.status_code, answer.text) == (504, "CAD DID NOT ANSWER IN TIME")


# -- only to the CAD, never ours --------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/openapi.json"), ("GET", "/login"),
    ("POST", "/api/anything"), ("POST", "/login/x"), ("POST", "/metrics/x"),
    ("GET", "/api/calls"), ("POST", "/nowhere/else"), ("GET", "/emergency/get_calls"),
    ("GET", "/v2/emergency/servers/1/calls/911"), ("PUT", "/emergency/call_911"),
    ("POST", "/v2/emergency/servers/1/calls/911/123"),
])
def test_our_routes_and_other_paths_are_never_forwarded(
        door: Web, cad: CadSimulator, method: str, path: str) -> None:
    answer = requests.request(method, door.url + path, data=b"{}", headers=BEARER, timeout=5)
    assert answer.status_code < 500
    assert cad.received() == [], f"{method} {path} reached the CAD"


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[str]]]:
    """A server that must never be reached: its address and the paths it was asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}", asked
    server.shutdown()
    server.server_close()


def test_traversal_and_absolute_urls_never_leave_the_cad(
        door: Web, cad: CadSimulator, elsewhere: tuple[str, list[str]]) -> None:
    where, asked = elsewhere
    for target in ("/v2/../metrics", "/v2/general/%2e%2e/%2e%2e/metrics", "/v2/a//b",
                   "/v2/general/version/..", "/v2/a%5c..%5cb"):
        status, _ = raw_request(door, "GET", target, BEARER)
        assert status in (400, 404), target
    status, body = raw_request(door, "GET", f"http://{where}/v2/general/version", BEARER)
    assert (status, json.loads(body)) == (200, {"version": 3}), "answered by our CAD"
    status, _ = raw_request(door, "GET", f"//{where}/v2/general/version", BEARER)
    assert status == 404
    assert asked == []
    assert [r["path"] for r in cad.received()] == ["/v2/general/version"]


def test_no_key_in_the_log(door: Web, cad: CadSimulator) -> None:
    door.post("/general/get_version", v1_body("GET_VERSION", [], key=OTHER_KEY))
    requests.get(door.url + "/v2/general/version",
                 headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=5)
    cad.set_fault("reset", route="other", count=2)
    door.post("/general/get_version", v1_body("GET_VERSION", [], key=OTHER_KEY))
    failed = requests.get(door.url + f"/v2/general/{API_KEY}",
                          headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=5)
    assert failed.status_code == 502 and API_KEY not in failed.text
    log = door.proc.output()
    assert "passthrough: GET /v2/general/***: 502" in log, "the lines are written, redacted"
    assert API_KEY not in log and OTHER_KEY not in log


# -- tickets -------------------------------------------------------------------------------

def test_a_delivered_ticket_becomes_the_cads_id(
        door: Web, cad: CadSimulator, rclient: redis.Redis) -> None:
    seed_ticket(rclient, "delivered", "42")
    v1 = door.post("/emergency/add_call_note",
                   v1_body("ADD_CALL_NOTE", [{"serverId": 1, "callId": TICKET, "note": "x"},
                                             {"callIds": [str(TICKET), 7]}]))
    v2 = requests.patch(door.url + f"/v2/emergency/servers/1/dispatch-calls/{TICKET}/postal",
                        json={"postal": "350"}, headers=BEARER, timeout=5)
    assert v1.status_code == v2.status_code == 404, "the simulator has no such endpoints"
    sent_v1, sent_v2 = cad.received()
    assert sent_v1["body"]["data"] == [{"serverId": 1, "callId": 42, "note": "x"},
                                       {"callIds": ["42", 7]}]
    assert sent_v2["path"] == "/v2/emergency/servers/1/dispatch-calls/42/postal"


def test_a_body_without_a_ticket_is_forwarded_byte_for_byte(
        door: Web, cad: CadSimulator, rclient: redis.Redis) -> None:
    # (a number in the tickets' range outside callId: the body is read, and left alone)
    body = (f'{{ "id" : "{COMMUNITY}", "key":"{API_KEY}","type":"UNIT_LOCATION",\n "data": '
            '[ {"callId": 17, "x": 1.50, "big": 9000000000000001} ] }').encode()
    answer = door.post("/emergency/unit_location", body)
    assert (answer.status_code, answer.text) == (200, "UNIT LOCATION UPDATED")
    assert cad.received()[0]["raw"] == body.decode().replace(API_KEY, "***")


@pytest.mark.parametrize("state", ["queued", "scheduled", "verifying"])
def test_a_ticket_not_yet_in_the_cad_is_409_and_never_forwarded(
        door: Web, cad: CadSimulator, rclient: redis.Redis, state: str) -> None:
    seed_ticket(rclient, state)
    v1 = door.post("/emergency/add_call_note",
                   v1_body("ADD_CALL_NOTE", [{"serverId": 1, "callId": str(TICKET)}]))
    v2 = requests.post(door.url + f"/v2/emergency/servers/1/dispatch-calls/{TICKET}/notes",
                       json={"note": "x"}, headers=BEARER, timeout=5)
    assert v1.status_code == 409 and v1.headers["Content-Type"].startswith("text/plain")
    assert v1.text.startswith(f"CALL NOT IN THE CAD YET: call {TICKET} is not in the CAD yet")
    assert "\n" not in v1.text
    assert v2.status_code == 409 and v2.json()["title"] == "Conflict"
    assert v2.headers["Content-Type"] == "application/problem+json"
    assert cad.received() == []


def test_an_unknown_ticket_is_404(door: Web, cad: CadSimulator, rclient: redis.Redis) -> None:
    answer = requests.get(door.url + f"/v2/emergency/servers/1/dispatch-calls/{TICKET + 1}",
                          headers=BEARER, timeout=5)
    assert answer.status_code == 404
    assert answer.json()["detail"] == f"CALL NOT FOUND: no call has the ticket {TICKET + 1}"
    assert cad.received() == []


# -- budgets and the breaker ----------------------------------------------------------------

def test_get_calls_with_our_key_gets_what_the_read_backs_leave(
        door: Web, cad: CadSimulator, rclient: redis.Redis) -> None:
    url = door.url + "/v2/emergency/servers/1/calls"
    statuses = [requests.get(url, headers=BEARER, timeout=5).status_code for _ in range(3)]
    assert statuses == [200, 200, 429], "5 a minute, 3 kept for our read-backs"
    refused = requests.get(url, headers=BEARER, timeout=5)
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert 50 <= int(refused.headers["Retry-After"]) <= 60
    assert len(cad.received()) == 2

    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    statuses = [requests.get(url, headers=other, timeout=5).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429], "another key: the whole budget, no reserve"
    assert not rclient.keys(f"*{API_KEY}*") and not rclient.keys(f"*{OTHER_KEY}*")


def test_v1_with_our_key_waits_behind_our_calls(
        door: Web, cad: CadSimulator, rclient: redis.Redis) -> None:
    rclient.hset("dispatcher:rate", "tat", repr(time.time() + 20))  # calls wait for 20 s
    refused = door.post("/general/get_version", v1_body("GET_VERSION", []))
    assert refused.status_code == 429 and refused.text.startswith("TOO MANY REQUESTS")
    assert 19 <= int(refused.headers["Retry-After"]) <= 21
    twice = (f'{{"id":"{COMMUNITY}","key":"{OTHER_KEY}","key":"{API_KEY}",'
             '"type":"GET_VERSION","data":[]}').encode()
    assert door.post("/general/get_version", twice).status_code == 429, \
        "read as the CAD reads it: the last key is ours"
    other = door.post("/general/get_version", v1_body("GET_VERSION", [], key=OTHER_KEY))
    assert other.status_code == 400, "another key's budget is not ours to keep"

    rclient.hset("dispatcher:rate", "tat", "0")
    assert door.post("/general/get_version", v1_body("GET_VERSION", [])).text == "3"
    assert float(rclient.hget("dispatcher:rate", "tat") or 0) > time.time(), "took a slot"


def test_an_open_breaker_fails_fast(door: Web, cad: CadSimulator, rclient: redis.Redis) -> None:
    rclient.hset("dispatcher:circuit", mapping={"state": "open",
                                                "open_until": repr(time.time() + 30)})
    cad.set_fault("hang", route="other")  # forwarded, it would wait for the timeout
    try:
        started = time.monotonic()
        v1 = door.post("/general/get_version", v1_body("GET_VERSION", []))
        v2 = requests.get(door.url + "/v2/general/version", headers=BEARER, timeout=5)
        elapsed = time.monotonic() - started
    finally:
        cad.clear_faults()
    assert elapsed < 0.8
    assert v1.status_code == v2.status_code == 503
    assert v1.text.startswith("CAD UNAVAILABLE") and 29 <= int(v1.headers["Retry-After"]) <= 30
    assert v2.json()["status"] == 503 and v2.headers["Retry-After"]
    assert cad.received() == []


# -- streaming -------------------------------------------------------------------------------

BIG_CHUNKS = 80
CHUNK = b"x" * 65536


class _Upstream:
    """A CAD that answers in chunks and waits for ``go`` after the first one."""

    def __init__(self) -> None:
        self.go = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path.endswith("/huge"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(64 * 1024 * 1024))
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(BIG_CHUNKS):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                    self.wfile.flush()
                    if i == 0:
                        upstream.go.wait(10)
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


def test_a_large_answer_is_streamed_and_a_huge_one_refused(
        redis_url: str, procs: Callable[..., Proc]) -> None:
    upstream = _Upstream()
    try:
        web = start_web(procs, {**base_env(redis_url), "SONORAN_API_URL": upstream.url})
        with requests.get(web.url + "/v2/big", headers=BEARER, stream=True, timeout=10) as got:
            assert got.status_code == 200
            chunks = got.iter_content(65536)
            first = next(chunks)
            assert first and not upstream.go.is_set(), "the first bytes came before the rest"
            upstream.go.set()
            size = len(first) + sum(len(c) for c in chunks)
        assert size == BIG_CHUNKS * len(CHUNK)
        huge = requests.get(web.url + "/v2/huge", headers=BEARER, timeout=10)
        assert huge.status_code == 502 and "TOO LARGE" in huge.json()["detail"]
    finally:
        upstream.go.set()
        upstream.server.shutdown()
        upstream.server.server_close()


def test_the_openapi_description_tells_of_the_passthrough(door: Web) -> None:
    info = requests.get(door.url + "/openapi.json", timeout=5).json()["info"]
    assert "Passthrough:" in info["description"] and "409" in info["description"]
