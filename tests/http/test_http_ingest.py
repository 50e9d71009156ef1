"""HTTP ingest against a real ``web`` process: the seed's door (v1) and the v2 shape.

Every answer text, the limits, content types, the 503 when Redis is gone, real records
behind every id, exactly one CAD call per accepted call, and the key never echoed.
"""

from __future__ import annotations

import codecs
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests

from dispatcher.http.body import MAX_JSON_DEPTH
from dispatcher.http.ingest import (
    MAX_BODY_BYTES,
    MAX_CALLS_PER_REQUEST,
    RETRY_AFTER_S,
    SERVER_MAX_BODY_BYTES,
)
from dispatcher.records import Records
from dispatcher.redisconn import QUEUE_WAIT_S
from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, COMMUNITY, Proc, RedisServer, base_env, run_cli, wait_for
from tests.http.httpkit import Web, call_keys, queued_ids, seed_body, seed_call, start_web

pytestmark = pytest.mark.integration

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
#: Every answer of this module, to check that none carries the API key.
ANSWERS: list[requests.Response] = []


@pytest.fixture
def door(shared_web: Web, redis_url: str) -> Iterator[Web]:
    """The module's web process, with a freshly flushed Redis; records every answer."""
    real_post = shared_web.post

    def post(path: str, body: bytes | str, headers: dict[str, str] | None = None,
             timeout: float = 30) -> requests.Response:
        answer = real_post(path, body, headers, timeout)
        ANSWERS.append(answer)
        return answer

    shared_web.post = post  # type: ignore[method-assign]
    try:
        yield shared_web
    finally:
        shared_web.post = real_post  # type: ignore[method-assign]


def _raw(text: str) -> bytes:
    return text.encode()


def _body(**members: Any) -> bytes:
    body: dict[str, Any] = {"id": COMMUNITY, "key": API_KEY, "type": "CALL_911",
                            "data": [seed_call()]}
    for name, value in members.items():
        if value is _DROP:
            body.pop(name)
        else:
            body[name] = value
    return json.dumps(body).encode()


_DROP = object()
_GOOD = seed_call()
_HEAD = f'{{"id":"{COMMUNITY}","key":"{API_KEY}","type":"CALL_911","data":'

# (case, body, exact text or prefix ending in "...")
REFUSALS: list[tuple[str, bytes, str]] = [
    ("type missing", _body(type=_DROP), "INVALID REQUEST TYPE"),
    ("type wrong", _body(type="CALL_912"), "INVALID REQUEST TYPE"),
    ("type lower case", _body(type="call_911"), "INVALID REQUEST TYPE"),
    ("type checked first", _body(type="X", id="other", key="wrong"), "INVALID REQUEST TYPE"),
    ("community id wrong", _body(id="other-community"), "INVALID COMMUNITY ID"),
    ("community id missing", _body(id=_DROP), "INVALID COMMUNITY ID"),
    ("community id a number", _body(id=12345), "INVALID COMMUNITY ID"),
    ("id checked before key", _body(id="other", key="wrong"), "INVALID COMMUNITY ID"),
    ("key wrong", _body(key="sk-wrong"), "INVALID API KEY"),
    ("key missing", _body(key=_DROP), "INVALID API KEY"),
    ("key a prefix of the real one", _body(key=API_KEY[:-1]), "INVALID API KEY"),
    ("key null", _body(key=None), "INVALID API KEY"),
    ("data missing", _body(data=_DROP),
     "INVALID CALL: data must be a non-empty array of call objects"),
    ("data empty", _body(data=[]), "INVALID CALL: data must be a non-empty array of call objects"),
    ("data an object", _body(data=_GOOD),
     "INVALID CALL: data must be a non-empty array of call objects"),
    ("too many calls", _body(data=[seed_call(i) for i in range(MAX_CALLS_PER_REQUEST + 1)]),
     f"INVALID CALL: data holds {MAX_CALLS_PER_REQUEST + 1} calls; at most "
     f"{MAX_CALLS_PER_REQUEST} calls per request"),
    ("a call not an object", _body(data=["call"]),
     "INVALID CALL: data[0]: a call must be a JSON object, got a string"),
    ("caller missing", _body(data=[_GOOD, {k: v for k, v in _GOOD.items() if k != "caller"}]),
     "INVALID CALL: data[1]: caller is required"),
    ("caller a number", _body(data=[seed_call(caller=7)]),
     "INVALID CALL: data[0]: caller must be a string, got a number"),
    ("caller blank", _body(data=[seed_call(caller="   ")]),
     "INVALID CALL: data[0]: caller must not be empty"),
    ("caller too long", _body(data=[seed_call(caller="x" * 257)]),
     "INVALID CALL: data[0]: caller is 257 characters, more than 256"),
    ("control character", _body(data=[seed_call(location="a\x00b")]),
     "INVALID CALL: data[0]: location contains a control character (code 0)"),
    ("isEmergency a string", _body(data=[seed_call(isEmergency="yes")]),
     "INVALID CALL: data[0]: isEmergency must be true or false, got a string"),
    ("postal a float", _body(data=[seed_call(metaData={"postal": 350.5})]),
     "INVALID CALL: data[0]: postal must be a string, got a number"),
    ("metaData an array", _body(data=[seed_call(metaData=[1])]),
     "INVALID CALL: data[0]: metaData must be an object, got an array"),
    ("unknown call field name too long, last call of three",
     _body(data=[seed_call(0), seed_call(1), seed_call(2, **{"n" * 65: 1})]),
     "INVALID CALL: data[2]: unknown field names must be 1 to 64 characters"),
    ("serverId a boolean", _body(data=[seed_call(serverId=True)]),
     "INVALID CALL: data[0]: serverId must be an integer or a string, got a boolean"),
    ("not JSON", _raw("id=x&key=y"), "INVALID REQUEST BODY: the body is not valid JSON ..."),
    ("truncated JSON", _body()[:-5], "INVALID REQUEST BODY: the body is not valid JSON ..."),
    ("empty body", b"", "INVALID REQUEST BODY: the body is empty; send a JSON object"),
    ("whitespace body", b" \r\n", "INVALID REQUEST BODY: the body is empty; send a JSON object"),
    ("a JSON array", _raw("[]"), "INVALID REQUEST BODY: the body must be a JSON object"),
    ("a JSON string", _raw('"CALL_911"'), "INVALID REQUEST BODY: the body must be a JSON object"),
    ("latin-1 body", (_HEAD + '[{"caller":"Jos\u00e9","location":"l","description":"d"}]}'
                      ).encode("latin-1"),
     "INVALID REQUEST BODY: the body is not valid UTF-8 ..."),
    ("UTF-16 body", _body().decode().encode("utf-16"),
     "INVALID REQUEST BODY: the body is not valid UTF-8 ..."),
    ("duplicate key member", _raw(_HEAD[:-1].replace('"type"', '"key":"x","type"') + ':[]}'),
     "INVALID REQUEST BODY: duplicate member name 'key'"),
    ("duplicate member in a call",
     _raw(_HEAD + '[{"caller":"a","caller":"b","location":"l","description":"d"}]}'),
     "INVALID REQUEST BODY: duplicate member name 'caller'"),
    ("NaN", _raw(_HEAD + '[{"caller":"a","location":"l","description":"d","metaData":{"x":NaN}}]}'),
     "INVALID REQUEST BODY: NaN is not a JSON number"),
    ("Infinity", _raw(_HEAD + '[{"caller":"a","location":"l","description":"d",'
                      '"metaData":{"x":-Infinity}}]}'),
     "INVALID REQUEST BODY: -Infinity is not a JSON number"),
    ("float overflow", _raw(_HEAD + '[{"caller":"a","location":"l","description":"d",'
                            '"metaData":{"x":1e999}}]}'),
     "INVALID REQUEST BODY: a number is out of range (too large for a double)"),
    ("integer beyond 2**53", _body(data=[seed_call(metaData={"x": 2**53})]),
     "INVALID REQUEST BODY: a number is out of range ..."),
    ("100,000-digit integer", _raw(_HEAD + '[{"caller":"a","location":"l","description":"d",'
                                   '"deleteAfterMinutes":' + "9" * 100_000 + '}]}'),
     "INVALID REQUEST BODY: a number is out of range ..."),
    ("deep metaData", _body(data=[seed_call(metaData={"x": json.loads("[" * 40 + "]" * 40)})]),
     f"INVALID REQUEST BODY: the body is nested more than {MAX_JSON_DEPTH} levels deep"),
    ("100,000 open brackets", _raw("[" * 100_000),
     f"INVALID REQUEST BODY: the body is nested more than {MAX_JSON_DEPTH} levels deep"),
    ("surrogate in id", _raw(_HEAD.replace(f'"id":"{COMMUNITY}"', '"id":"\\ud800"') + "[]}"),
     "INVALID COMMUNITY ID"),
    ("surrogate in key", _raw(_HEAD.replace(f'"key":"{API_KEY}"', '"key":"\\udfff"') + "[]}"),
     "INVALID API KEY"),
    ("surrogate in caller", _raw(_HEAD + '[{"caller":"a\\ud800","location":"l",'
                                 '"description":"d"}]}'),
     "INVALID CALL: data[0]: caller contains an unpaired surrogate (not valid Unicode)"),
    ("surrogate as a field name", _raw(_HEAD + '[{"\\ud800":1}]}'),
     "INVALID CALL: data[0]: an unknown field's name contains ..."),
    ("call larger than 16 KiB", _body(data=[seed_call(metaData={f"k{i}": "x" * 400
                                                               for i in range(45)})]),
     "INVALID CALL: data[0]: the call is ..."),
]


def _check_text(answer: requests.Response, expected: str) -> None:
    if expected.endswith("..."):
        assert answer.text.startswith(expected[:-3]), answer.text
    else:
        assert answer.text == expected
    assert answer.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("case, body, expected", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_v1_refusals_answer_400_with_their_text_and_queue_nothing(
    door: Web, rclient: redis.Redis, case: str, body: bytes, expected: str
) -> None:
    answer = door.v1(body)
    assert answer.status_code == 400, (case, answer.text)
    _check_text(answer, expected)
    assert call_keys(rclient) == set(), "a refused request leaves no record"


def _record(client: redis.Redis, call_id: str) -> dict[str, Any]:
    record = Records(client).get(call_id)
    assert record is not None, f"no record for {call_id}"
    return record.to_json()


def test_the_seed_body_byte_for_byte_queues_one_call(door: Web, rclient: redis.Redis) -> None:
    body = seed_body([seed_call()])
    assert body.startswith(b'{"id":"test-community","key":"')  # what FiveM's json.encode sends
    answer = door.v1(body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    (call_id,) = queued_ids(answer)
    assert ULID.match(call_id)
    # Scripts that read "ID: (%d+)" get the call's ticket, which names the call.
    ticket = re.search(r"ID: (\d+)", answer.text).group(1)  # type: ignore[union-attr]
    assert rclient.get(f"dispatcher:ticket:{ticket}") == call_id.encode()
    record = _record(rclient, call_id)
    assert record["call"] == seed_call()
    assert record["source"] == "http"
    assert call_keys(rclient) == {call_id}


def test_several_calls_are_queued_in_order_and_are_real_records(
    door: Web, rclient: redis.Redis, redis_url: str
) -> None:
    calls = [seed_call(i) for i in range(3)]
    answer = door.v1(seed_body(calls))
    assert answer.status_code == 200, answer.text
    ids = queued_ids(answer)
    assert len(ids) == len(set(ids)) == 3
    assert call_keys(rclient) == set(ids)
    for i, call_id in enumerate(ids):
        assert _record(rclient, call_id)["call"] == calls[i]
    env = base_env(redis_url)
    for call_id in ids:
        status = run_cli(["status", call_id, "--json"], env)
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert shown["id"] == call_id and shown["status"] == "queued"


def test_the_most_calls_per_request_are_accepted(door: Web, rclient: redis.Redis) -> None:
    answer = door.v1(seed_body([seed_call(i) for i in range(MAX_CALLS_PER_REQUEST)]))
    assert answer.status_code == 200, answer.text
    assert len(set(queued_ids(answer))) == MAX_CALLS_PER_REQUEST
    assert len(call_keys(rclient)) == MAX_CALLS_PER_REQUEST


@pytest.mark.parametrize("content_type", [
    None, "application/json", "application/json; charset=utf-8", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "nonsense",
])
def test_any_content_type_is_accepted(door: Web, rclient: redis.Redis,
                                      content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    raw = requests.post(door.url + "/emergency/call_911", data=seed_body([seed_call()]),
                        headers=headers, timeout=30)
    if content_type is None:
        assert "Content-Type" not in raw.request.headers
    assert raw.status_code == 200, raw.text
    (call_id,) = queued_ids(raw)
    assert call_keys(rclient) == {call_id}


def test_lenient_but_valid_bodies_are_accepted(door: Web, rclient: redis.Redis) -> None:
    # Pretty-printed, CRLF, a UTF-8 BOM, unknown top-level members (ignored as the CAD
    # does), the flat form in data, a numeric postal, an integer serverId, unicode text.
    flat = {"caller": "Zoë 🚓", "location": "شارع 1", "description": "x" * 4000,
            "postal": 350, "plate": "8ABC123", "serverId": 2, "isEmergency": False,
            "idempotencyKey": "flat-1"}
    seed_numeric = seed_call(1, metaData={"postal": 7015, "priority": 2, "x": -1.5})
    body = {"type": "CALL_911", "id": COMMUNITY, "key": API_KEY, "version": 3,
            "data": [flat, seed_numeric]}
    raw = codecs.BOM_UTF8 + json.dumps(body, indent=4, ensure_ascii=False).replace(
        "\n", "\r\n").encode()
    answer = door.v1(raw)
    assert answer.status_code == 200, answer.text
    first, second = queued_ids(answer)
    assert _record(rclient, first)["call"] == {
        "serverId": 2, "isEmergency": False, "caller": "Zoë 🚓", "location": "شارع 1",
        "description": "x" * 4000, "metaData": {"postal": "350", "plate": "8ABC123"}}
    assert _record(rclient, first)["idempotency_key"] == "flat-1"
    assert _record(rclient, second)["call"]["metaData"] == {
        "postal": "7015", "priority": 2, "x": -1.5}


def test_an_idempotency_key_makes_a_retry_return_the_same_ids(
    door: Web, rclient: redis.Redis
) -> None:
    body = seed_body([seed_call(0), seed_call(1)])
    first = queued_ids(door.v1(body, **{"Idempotency-Key": "req-42"}))
    again = queued_ids(door.v1(body, **{"Idempotency-Key": "req-42"}))
    assert first == again and len(set(first)) == 2
    assert [_record(rclient, i)["idempotency_key"] for i in first] == ["req-42/0", "req-42/1"]
    own = seed_body([seed_call(2, idempotencyKey="own-key")])
    assert queued_ids(door.v1(own)) == queued_ids(door.v1(own))
    assert len(call_keys(rclient)) == 3
    bad = door.v1(body, **{"Idempotency-Key": "has space"})
    assert bad.status_code == 400
    assert bad.text.startswith("INVALID REQUEST BODY: the Idempotency-Key header must be")


def _padded(size: int) -> bytes:
    """A valid seed body of exactly ``size`` bytes (padding in an ignored member)."""
    base = json.loads(seed_body([seed_call()]))
    base["padding"] = ""
    empty = len(json.dumps(base, separators=(",", ":")).encode())
    base["padding"] = "p" * (size - empty)
    raw = json.dumps(base, separators=(",", ":")).encode()
    assert len(raw) == size
    return raw


def test_body_size_limit_answers_413(door: Web, rclient: redis.Redis) -> None:
    at_limit = door.v1(_padded(MAX_BODY_BYTES))
    assert at_limit.status_code == 200, at_limit.text
    assert len(call_keys(rclient)) == 1
    over = door.v1(_padded(MAX_BODY_BYTES + 1))
    assert over.status_code == 413
    assert over.text == f"REQUEST TOO LARGE: at most {MAX_BODY_BYTES} bytes"
    # Chunked (no Content-Length): counted as it streams.
    raw = _padded(MAX_BODY_BYTES + 10)
    chunked = requests.post(door.url + "/emergency/call_911",
                            data=(raw[i:i + 8192] for i in range(0, len(raw), 8192)),
                            timeout=30)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert chunked.status_code == 413
    # Far beyond: the HTTP server refuses it on the headers alone, before any body byte.
    with socket.create_connection(("127.0.0.1", int(door.url.rsplit(":", 1)[1])), 10) as sock:
        sock.sendall(f"POST /emergency/call_911 HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     f"{SERVER_MAX_BODY_BYTES + 1}\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 413 ")
    v2 = door.v2(b'{"caller":"' + b"x" * MAX_BODY_BYTES + b'"}')
    assert v2.status_code == 413
    assert v2.headers["Content-Type"] == "application/problem+json"
    assert len(call_keys(rclient)) == 1


def test_compressed_bodies_and_other_methods_are_refused(door: Web) -> None:
    gz = door.v1(seed_body([seed_call()]), **{"Content-Encoding": "gzip"})
    assert gz.status_code == 415
    assert gz.text.startswith("UNSUPPORTED CONTENT ENCODING gzip")
    get = requests.get(door.url + "/emergency/call_911", timeout=10)
    assert get.status_code == 405
    assert "POST" in get.headers["Allow"]


# -- v2 ------------------------------------------------------------------------------------

def _v2_call(**overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"isEmergency": True, "caller": "Jane Doe",
                            "location": "Route 68 / Joshua Rd",
                            "description": "Two-car collision",
                            "metaData": {"postal": "350", "plate": "8ABC123"}}
    call.update(overrides)
    return call


def _problem(answer: requests.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert set(body) >= {"type", "title", "status", "detail", "instance", "traceId"}
    assert body["status"] == status
    assert body["instance"] == answer.request.path_url
    assert re.fullmatch(r"[0-9a-f]{32}", body["traceId"])
    return body


def test_v2_queues_one_call_and_answers_its_id(door: Web, rclient: redis.Redis) -> None:
    answer = door.v2(json.dumps(_v2_call()), server_id="7")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    body = answer.json()
    assert ULID.match(body["id"]) and body["status"] == "queued"
    assert answer.headers["X-Dispatcher-Call-Id"] == body["id"]
    # callId is the call's ticket: a number like the CAD's ids, that names the call.
    assert isinstance(body["callId"], int) and 9 * 10**15 < body["callId"] < 2**53
    assert rclient.get(f"dispatcher:ticket:{body['callId']}") == body["id"].encode()
    assert body["serverId"] == "7" and body["caller"] == "Jane Doe"
    assert call_keys(rclient) == {body["id"]}
    assert _record(rclient, body["id"])["call"] == {"serverId": "7", **_v2_call()}
    retry = door.v2(json.dumps(_v2_call()), server_id="7", **{"Idempotency-Key": "v2-1"})
    again = door.v2(json.dumps(_v2_call()), server_id="7", **{"Idempotency-Key": "v2-1"})
    assert retry.json()["id"] == again.json()["id"] != body["id"]
    assert retry.json()["callId"] == again.json()["callId"] == body["callId"] + 1
    assert len(call_keys(rclient)) == 2


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Bearer sk-wrong", f"Basic {API_KEY}", f"Bearer {API_KEY}x",
    f"Bearer {API_KEY[:-1]}", "Token abc",
])
def test_v2_without_the_right_key_is_401(door: Web, rclient: redis.Redis,
                                         authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = door.v2(json.dumps(_v2_call()), key=None, **headers)
    body = _problem(answer, 401)
    assert body["title"] == "Unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert call_keys(rclient) == set()


def test_v2_bearer_scheme_is_case_insensitive(door: Web) -> None:
    answer = door.v2(json.dumps(_v2_call()), key=None, Authorization=f"bearer {API_KEY}")
    assert answer.status_code == 200, answer.text


V2_REFUSALS: list[tuple[str, bytes, str, str | None]] = [
    ("not JSON", b"caller=x", "the body is not valid JSON", None),
    ("an array", b"[]", "the body must be a JSON object", None),
    ("caller missing", json.dumps(_v2_call(caller=None)).encode(), "caller is required",
     "caller"),
    ("description a number", json.dumps(_v2_call(description=5)).encode(),
     "description must be a string", "description"),
    ("metaData an array", json.dumps(_v2_call(metaData=[1])).encode(),
     "metaData must be an object", "metaData"),
    ("isEmergency a string", json.dumps(_v2_call(isEmergency="true")).encode(),
     "isEmergency must be true or false", "isEmergency"),
    ("duplicate member", b'{"caller":"a","caller":"b","location":"l","description":"d"}',
     "duplicate member name 'caller'", None),
]


@pytest.mark.parametrize("case, body, detail, field", V2_REFUSALS,
                         ids=[c[0] for c in V2_REFUSALS])
def test_v2_invalid_bodies_are_400_problems_naming_the_field(
    door: Web, rclient: redis.Redis, case: str, body: bytes, detail: str, field: str | None
) -> None:
    problem = _problem(door.v2(body), 400)
    assert problem["detail"].startswith(detail), problem
    assert problem.get("field") == field
    assert call_keys(rclient) == set()


def test_v2_metadata_values_become_text_as_lua_tostring_would(door: Web,
                                                               rclient: redis.Redis) -> None:
    meta = {"postal": 350, "silentAlert": True, "x": 1.5, "useCallLocation": False,
            "gone": None, "obj": {"a": [1, 2]}, "plate": "8ABC123"}
    answer = door.v2(json.dumps(_v2_call(metaData=meta, coords={"x": 1.5})), server_id="7")
    assert answer.status_code == 200, answer.text
    stored = _record(rclient, answer.json()["id"])["call"]
    assert stored["metaData"] == {"postal": "350", "silentAlert": "true", "x": "1.5",
                                  "useCallLocation": "false", "obj": '{"a":[1,2]}',
                                  "plate": "8ABC123"}
    assert stored["coords"] == {"x": 1.5}


def test_v2_server_id_is_checked(door: Web, rclient: redis.Redis) -> None:
    problem = _problem(door.v2(json.dumps(_v2_call()), server_id="9" * 40), 400)
    assert problem["field"] == "serverId"
    assert call_keys(rclient) == set()


def test_the_api_key_is_never_in_an_answer_or_a_log_line(door: Web, shared_web: Web) -> None:
    hostile = [
        seed_body([{API_KEY: "x"}]),                       # the key as a field name
        seed_body([seed_call(metaData={API_KEY: 1})]),      # as a metaData key
        seed_body([seed_call()], community=API_KEY),        # as the community id
        seed_body([seed_call(**{"x" * 300 + API_KEY: 1})]),  # at the end of a long name
        seed_body([seed_call()], key=API_KEY + "x"),
        seed_body([seed_call()], type_=API_KEY),
    ]
    for body in hostile:
        assert door.v1(body).status_code == 400
    stored = door.v1(seed_body([seed_call(description=f"my key is {API_KEY}!")]))
    assert stored.text == ("INVALID CALL: data[0]: the call contains the API key; it would be "
                           "stored and shown with the call, so it is refused: remove it")
    assert door.v2(json.dumps({API_KEY: 1, **_v2_call()})).status_code == 400
    assert door.v2(json.dumps(_v2_call(metaData={API_KEY: 5}))).status_code == 400
    assert door.v2(json.dumps(_v2_call()), key=API_KEY[::-1]).status_code == 401
    assert door.v1(seed_body([seed_call()])).status_code == 200
    # Every answer of this module so far (this test runs after the others in file order).
    for answer in ANSWERS:
        assert API_KEY not in answer.text, answer.text
        assert all(API_KEY not in f"{k}: {v}" for k, v in answer.headers.items())
    log = shared_web.proc.output()
    # Accepted requests are logged at DEBUG (the hot path); refusals at INFO, the first
    # from a source at once, the next ones summed up once a minute (dispatcher.http.refusals).
    assert "http v1: 400" in log or "http v2: 4" in log
    assert API_KEY not in log


# -- with processes of the test's own --------------------------------------------------------

def test_503_with_retry_after_when_redis_is_unreachable_and_recovery_after(
    sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    server = RedisServer(appendonly=False).start()
    again: RedisServer | None = None
    try:
        web = start_web(procs, base_env(server.url, sim))
        assert web.v1(seed_body([seed_call()])).status_code == 200
        server.kill()
        answer = web.v1(seed_body([seed_call(1), seed_call(2)]))
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == str(RETRY_AFTER_S)
        # The producer's wait is bounded: the answer and the log name the bound it gave up at.
        bounded = f"the queue (Redis) could not be reached within {QUEUE_WAIT_S:g}s"
        assert answer.text.startswith(f"QUEUE UNAVAILABLE: {bounded}"), answer.text
        assert answer.text.endswith("No call of this request was queued.")
        wait_for(lambda: f"http v1: 503 QUEUE UNAVAILABLE: {bounded}" in web.proc.output(),
                 10, message="the 503 in the web's log")
        v2 = web.v2(json.dumps(_v2_call()))
        problem = _problem(v2, 503)
        assert problem["detail"].startswith("the queue (Redis) could not be reached")
        assert v2.headers["Retry-After"] == str(RETRY_AFTER_S)
        assert requests.get(web.url + "/healthz", timeout=10).status_code == 503
        # Redis comes back: the same process queues again, no restart needed.
        again = RedisServer(port=server.port, appendonly=False).start()
        back = web.v1(seed_body([seed_call(3)]))
        assert back.status_code == 200, back.text
        (call_id,) = queued_ids(back)
        assert _record(redis.Redis.from_url(again.url), call_id)["call"] == seed_call(3)
        assert API_KEY not in web.proc.output()
    finally:
        server.stop()
        if again is not None:
            again.stop()


#: The official resource's /911 command call, field for field (sonorancad/submodules/
#: callcommands/sv_callcommands.lua, SendCallApi): string metaData it adds itself.
CALLCOMMANDS_CALL: dict[str, Any] = {
    "serverId": 1, "isEmergency": True, "caller": "Jane Command",
    "location": "Route 68 / Joshua Rd", "description": "Shots fired", "deleteAfterMinutes": 30,
    "metaData": {"callerPlayerId": "12", "callerCommunityUserId": "b1f2c3",
                 "uuid": "4c6e0a3e-5d1b-4f3a-9c2d-1e2f3a4b5c6d", "silentAlert": "false",
                 "useCallLocation": "false", "postal": "350", "x": "215.3", "y": "-810.1",
                 "z": "30.7"},
}
#: Its exported call911 (sonorancad/core/api_wrappers.lua): an older version's deleteAfter
#: and coords, booleans in metaData, plus a field no version sends yet.
OFFICIAL_CALL: dict[str, Any] = {
    "serverId": "1", "isEmergency": True, "caller": "Jane Official",
    "location": "Route 68 / Joshua Rd", "description": "Shots fired",
    "metaData": {"plate": "", "postal": "350", "useCallLocation": "false",
                 "silentAlert": "false", "callerPlayerId": "12",
                 "callerCommunityUserId": "b1f2c3", "uuid": "4c6e0a3e-0000-4000-8000-1",
                 "x": "215.3", "y": "-810.1", "z": "30.7", "silenceAlert": False},
    "deleteAfter": 30, "coords": {"x": 215.3, "y": -810.1, "z": 30.7},
    "futureField": {"any": ["json", 1, None]},
}


def test_the_official_resource_body_reaches_the_cad_with_its_extras(
    web: Web, sim: CadSimulator, procs: Callable[..., Proc], redis_url: str,
    rclient: redis.Redis
) -> None:
    ids = queued_ids(web.v1(seed_body([OFFICIAL_CALL, CALLCOMMANDS_CALL])))
    v2 = {k: v for k, v in OFFICIAL_CALL.items() if k != "serverId"}
    answer = web.v2(json.dumps({**v2, "caller": "Jane V2"}), server_id="1")
    assert answer.status_code == 200, answer.text
    ids.append(answer.json()["callId"])
    procs(["worker"], base_env(redis_url, sim))
    records = Records(rclient)
    wait_for(lambda: all(r.status == "delivered" for r in records.get_many(ids)), 60, 0.1,
             "every call delivered")
    by_caller = {c["call"]["caller"]: c["call"] for c in sim.calls()}
    for caller in ("Jane Official", "Jane V2"):
        sent = by_caller[caller]
        assert sent["coords"] == OFFICIAL_CALL["coords"]
        assert sent["futureField"] == OFFICIAL_CALL["futureField"]
        assert sent["deleteAfterMinutes"] == 30 and "deleteAfter" not in sent
        assert sent["metaData"]["callerPlayerId"] == "12"
    assert by_caller["Jane Official"]["metaData"]["silenceAlert"] is False  # v1: as given
    command = by_caller["Jane Command"]
    tags = {k: command["metaData"].pop(k) for k in ("dispatcherCallId", "dispatcherQueuedAt")}
    assert command == CALLCOMMANDS_CALL and tags["dispatcherCallId"] in ids
    assert by_caller["Jane V2"]["metaData"]["silenceAlert"] == "false"  # v2: text


def test_each_accepted_call_reaches_the_cad_exactly_once(
    web: Web, sim: CadSimulator, procs: Callable[..., Proc], redis_url: str,
    rclient: redis.Redis
) -> None:
    ids: list[str] = []
    ids += queued_ids(web.v1(seed_body([seed_call(0)])))
    ids += queued_ids(web.v1(seed_body([seed_call(i) for i in range(1, 6)])))
    retried = seed_body([seed_call(6), seed_call(7)])
    first = queued_ids(web.v1(retried, **{"Idempotency-Key": "game-server-retry"}))
    assert queued_ids(web.v1(retried, **{"Idempotency-Key": "game-server-retry"})) == first
    ids += first
    v2 = web.v2(json.dumps(_v2_call(caller="Jane Doe 8")), server_id="2")
    ids.append(v2.json()["id"])
    # Refused requests in between add nothing.
    assert web.v1(seed_body([seed_call(9), {"caller": 1}])).status_code == 400
    assert web.v1(seed_body([seed_call(10)], key="nope")).status_code == 400
    assert len(set(ids)) == 9 and call_keys(rclient) == set(ids)

    env = base_env(redis_url, sim)
    procs(["worker"], env)
    procs(["scheduler"], env)
    records = Records(rclient)

    def delivered() -> bool:
        return all(r.status == "delivered" for r in records.get_many(ids))

    wait_for(delivered, 60, 0.1, "every accepted call delivered")
    time.sleep(1.0)  # let any duplicate that were going to happen, happen
    calls = sim.calls()
    assert len(calls) == 9, "one CAD call per accepted call"
    assert sim.stats()["duplicates"] == 0
    assert sorted(c["call"]["caller"] for c in calls) == sorted(
        f"Jane Doe {i}" for i in range(9))
    assert {r.cad_call_id for r in records.get_many(ids)} == {str(c["cad_id"]) for c in calls}
    by_caller = {c["call"]["caller"]: c["call"] for c in calls}
    # The seed's call exactly, plus our two tags (our id, the time it was made).
    sent = by_caller["Jane Doe 3"]
    tags = {k: sent["metaData"].pop(k) for k in ("dispatcherCallId", "dispatcherQueuedAt")}
    assert sent == seed_call(3)
    assert tags["dispatcherCallId"] in ids
    assert by_caller["Jane Doe 8"]["serverId"] == "2"
    for received in sim.received():
        assert received["body"]["key"] == "***"  # the simulator redacts what it stores
    assert API_KEY not in web.proc.output()
