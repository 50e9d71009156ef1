"""The lean path (dispatcher.http.lean) answers exactly as the Flask app does.

In process, against the real Redis: every request is sent twice, once through the app as
served (the lean path in front of Flask) and once straight to the Flask app behind it,
and the two answers must be the same status line, headers and body (our ids, tickets
and trace ids aside, which differ by nature). The requests the lean path must serve
itself are checked to have not reached Flask; the unusual ones to have reached it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from dispatcher.http.app import create_app
from dispatcher.http.ingest import EXTENSION, MAX_BODY_BYTES, Door
from dispatcher.http.lean import LeanDoor, create_request
from dispatcher.settings import Secret, Settings
from tests.conftest import API_KEY, COMMUNITY, SEED_CALL

V1 = "/emergency/call_911"
V2 = "/v2/emergency/servers/1/calls/911"
BEARER = {"Authorization": f"Bearer {API_KEY}"}


class Counting:
    """The Flask app behind the lean path, counting the requests that reach it."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self.calls += 1
        return self.inner(environ, start_response)


@pytest.fixture
def app(redis_url: str) -> Iterator[tuple[Flask, LeanDoor, Counting]]:
    settings = Settings(community_id=COMMUNITY, api_key=Secret(API_KEY), redis_url=redis_url,
                        ingest_rate=None)
    yield _made(settings)


def _made(settings: Settings) -> tuple[Flask, LeanDoor, Counting]:
    flask_app = create_app(settings)
    lean = flask_app.wsgi_app
    assert isinstance(lean, LeanDoor)
    behind = Counting(lean.inner)
    lean.inner = behind
    return flask_app, lean, behind


def _ask(wsgi: Callable[..., Any], path: str, body: bytes | str | None, method: str = "POST",
         headers: dict[str, str] | None = None, addr: str = "127.0.0.1",
         ) -> tuple[str, list[tuple[str, str]], str]:
    environ = EnvironBuilder(path=path, method=method, data=body, headers=headers or {},
                             environ_overrides={"REMOTE_ADDR": addr}).get_environ()
    app_iter, status, answer_headers = run_wsgi_app(wsgi, environ)
    try:
        text = b"".join(app_iter).decode()
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None:
            close()
    return status, list(answer_headers.items()), text


_IDS = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
_TICKETS = re.compile(r"\b9\d{15}\b")
_TRACES = re.compile(r"\b[0-9a-f]{32}\b")


def _norm(answer: tuple[str, list[tuple[str, str]], str]) -> Any:
    def clean(text: str) -> str:
        return _TRACES.sub("<trace>", _TICKETS.sub("<ticket>", _IDS.sub("<id>", text)))

    status, headers, body = answer
    return status, [(name, clean(value)) for name, value in headers], clean(body)


def both(app: tuple[Flask, LeanDoor, Counting], path: str, body: bytes | str | None, *,
         lean_serves: bool = True, **kw: Any) -> tuple[str, list[tuple[str, str]], str]:
    """Send the request both ways; assert the same answer; return the lean path's."""
    flask_app, _, behind = app
    before = behind.calls
    lean = _ask(flask_app, path, body, **kw)
    assert behind.calls - before == (0 if lean_serves else 1), "which path served it"
    framework = _ask(behind.inner, path, body, **kw)
    assert _norm(lean) == _norm(framework)
    return lean


def v1(*calls: Any, **top: Any) -> bytes:
    body = {"id": COMMUNITY, "key": API_KEY, "type": "CALL_911",
            "data": list(calls) or [SEED_CALL], **top}
    return json.dumps(body).encode()


def call(**changes: Any) -> dict[str, Any]:
    found = {**SEED_CALL, **changes}
    return {k: v for k, v in found.items() if v is not None}


V1_CASES: list[tuple[str, bytes | str, dict[str, str]]] = [
    ("one call", v1(), {}),
    ("two calls", v1(SEED_CALL, call(caller="Someone else")), {}),
    ("flat form, unknown top-level member", v1(
        {"caller": "A", "location": "B", "description": "C"}, extra=1), {}),
    ("postal as a number", v1(call(metaData={"postal": 350})), {}),
    ("not JSON", b"{nope", {}),
    ("a blank body", b" \r\n", {}),
    ("not an object", b"[1, 2]", {}),
    ("not UTF-8", b'{"id": "\xff"}', {}),
    ("duplicate names", b'{"id": 1, "id": 2}', {}),
    ("too deep", b'{"a":' * 40 + b"1" + b"}" * 40, {}),
    ("integer out of range", b'{"id": 9007199254740993}', {}),
    ("NaN", b'{"id": NaN}', {}),
    ("wrong type", json.dumps({"id": COMMUNITY, "key": API_KEY, "type": "CALL_912",
                               "data": [SEED_CALL]}).encode(), {}),
    ("wrong community", json.dumps({"id": "other", "key": API_KEY, "type": "CALL_911",
                                    "data": [SEED_CALL]}).encode(), {}),
    ("wrong key", json.dumps({"id": COMMUNITY, "key": "sk-wrong-0123456789abcdef",
                              "type": "CALL_911", "data": [SEED_CALL]}).encode(), {}),
    ("no data", json.dumps({"id": COMMUNITY, "key": API_KEY, "type": "CALL_911"}).encode(), {}),
    ("empty data", json.dumps({"id": COMMUNITY, "key": API_KEY, "type": "CALL_911",
                               "data": []}).encode(), {}),
    ("too many calls", v1(*([SEED_CALL] * 51)), {}),
    ("a call without a caller", v1(SEED_CALL, call(caller=None)), {}),
    ("a control character", v1(call(description="bad\x00")), {}),
    ("a lone surrogate", b'{"id": "%s", "key": "%s", "type": "CALL_911", "data": [{"caller": '
     b'"\\ud800", "location": "x", "description": "y"}]}' % (COMMUNITY.encode(), API_KEY.encode()),
     {}),
    ("the key inside a call", v1(call(description=f"my key is {API_KEY}")), {}),
    ("the key in the Idempotency-Key header", v1(), {"Idempotency-Key": f"x{API_KEY}"}),
    ("a bad Idempotency-Key header", v1(), {"Idempotency-Key": "has space"}),
    ("a long Idempotency-Key header", v1(), {"Idempotency-Key": "k" * 129}),
    ("a Content-Type the door does not check", v1(), {"Content-Type": "text/plain"}),
    ("Content-Encoding identity", v1(), {"Content-Encoding": "identity"}),
]


@pytest.mark.parametrize(("body", "headers"), [(b, h) for _, b, h in V1_CASES],
                         ids=[name for name, _, _ in V1_CASES])
def test_v1_answers_are_the_same_both_ways(app: Any, body: bytes, headers: dict[str, str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    both(app, V1, body, headers=headers)
    assert API_KEY not in caplog.text  # refusals logged, the key redacted


V2_CASES: list[tuple[str, str, bytes | str, dict[str, str]]] = [
    ("one call", V2, json.dumps(SEED_CALL), BEARER),
    ("metaData values made text", V2, json.dumps(call(metaData={"postal": 350, "a": True,
                                                                "b": None, "c": [1]})), BEARER),
    ("unknown members kept", V2, json.dumps(call(extraThing="kept")), BEARER),
    ("no Authorization", V2, json.dumps(SEED_CALL), {}),
    ("a wrong key", V2, json.dumps(SEED_CALL), {"Authorization": "Bearer sk-wrong-012345678"}),
    ("Basic, not Bearer", V2, json.dumps(SEED_CALL), {"Authorization": f"Basic {API_KEY}"}),
    ("the key in serverId", f"/v2/emergency/servers/{API_KEY}/calls/911",
     json.dumps(SEED_CALL), BEARER),
    ("a text serverId", "/v2/emergency/servers/srv-a/calls/911", json.dumps(SEED_CALL), BEARER),
    ("a percent sign in serverId", "/v2/emergency/servers/a%2525b/calls/911",
     json.dumps(SEED_CALL), BEARER),
    ("a space and a plus in serverId", "/v2/emergency/servers/a%20b+c/calls/911",
     json.dumps(SEED_CALL), BEARER),
    ("not JSON", V2, "{nope", BEARER),
    ("a call without a location", V2, json.dumps(call(location=None)), BEARER),
    ("a field of the wrong type", V2, json.dumps(call(isEmergency="yes")), BEARER),
    ("the key inside the call", V2, json.dumps(call(caller=API_KEY)), BEARER),
    ("the key in the Idempotency-Key header", V2, json.dumps(SEED_CALL),
     {**BEARER, "Idempotency-Key": API_KEY}),
    ("a bad Idempotency-Key header", V2, json.dumps(SEED_CALL),
     {**BEARER, "Idempotency-Key": "a b"}),
]


@pytest.mark.parametrize(("path", "body", "headers"), [(p, b, h) for _, p, b, h in V2_CASES],
                         ids=[name for name, _, _, _ in V2_CASES])
def test_v2_answers_are_the_same_both_ways(app: Any, path: str, body: str,
                                           headers: dict[str, str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    both(app, path, body, headers=headers)
    assert API_KEY not in caplog.text


def test_an_idempotency_key_gives_the_same_call_both_ways(app: Any) -> None:
    """The lean path queues; the same request through Flask finds the same calls."""
    flask_app, _, behind = app
    headers = {"Idempotency-Key": "retry-me-1"}
    body = v1(SEED_CALL, call(caller="Second caller"))
    lean = _ask(flask_app, V1, body, headers=headers)
    framework = _ask(behind.inner, V1, body, headers=headers)
    assert lean[0] == "200 OK"
    assert lean == framework  # the same tickets and ids, byte for byte
    v2_headers = {**BEARER, "Idempotency-Key": "retry-me-2"}
    first = _ask(flask_app, V2, json.dumps(SEED_CALL), headers=v2_headers)
    again = _ask(behind.inner, V2, json.dumps(SEED_CALL), headers=v2_headers)
    assert first[0] == "200 OK" and first == again


UNUSUAL: list[tuple[str, str, str, bytes | str | None, dict[str, str]]] = [
    ("compressed", "POST", V1, v1(), {"Content-Encoding": "gzip"}),
    ("compressed v2", "POST", V2, json.dumps(SEED_CALL), {**BEARER, "Content-Encoding": "br"}),
    ("asks to wait", "POST", V1, v1(), {"Prefer": "wait=0"}),
    ("no Content-Length", "POST", V1, b"", {}),
    ("too large", "POST", V1, b" " * (MAX_BODY_BYTES + 1), {}),
    ("too large v2", "POST", V2, b" " * (MAX_BODY_BYTES + 1), BEARER),
    ("not POST", "GET", V1, None, {}),
    ("not POST v2", "PUT", V2, json.dumps(SEED_CALL), BEARER),
    ("a trailing slash", "POST", V1 + "/", v1(), {}),
    ("an empty serverId", "POST", "/v2/emergency/servers//calls/911", json.dumps(SEED_CALL),
     BEARER),
    ("a non-ASCII serverId", "POST", "/v2/emergency/servers/\u00e9/calls/911",
     json.dumps(SEED_CALL), BEARER),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"),
                         [(m, p, b, h) for _, m, p, b, h in UNUSUAL],
                         ids=[name for name, *_ in UNUSUAL])
def test_unusual_requests_go_to_flask(app: Any, method: str, path: str, body: Any,
                                      headers: dict[str, str]) -> None:
    both(app, path, body, method=method, headers=headers, lean_serves=False)


def test_the_ingest_rate_refuses_the_same_way(redis_url: str) -> None:
    settings = Settings(community_id=COMMUNITY, api_key=Secret(API_KEY), redis_url=redis_url,
                        ingest_rate=0.2)  # burst 1, then one per 5 s
    flask_app, _, behind = made = _made(settings)
    lean = [_ask(flask_app, V1, v1(), addr="10.0.0.1") for _ in range(4)]
    framework = [_ask(behind.inner, V1, v1(), addr="10.0.0.2") for _ in range(4)]
    assert [_norm(a) for a in lean] == [_norm(a) for a in framework]
    assert lean[-1][0] == "429 TOO MANY REQUESTS"
    assert behind.calls == 0  # the lean path served its four itself
    v2 = [_ask(flask_app, V2, json.dumps(SEED_CALL), headers=BEARER, addr="10.0.0.3")
          for _ in range(4)]
    v2_framework = [_ask(behind.inner, V2, json.dumps(SEED_CALL), headers=BEARER,
                         addr="10.0.0.4") for _ in range(4)]
    assert [_norm(a) for a in v2] == [_norm(a) for a in v2_framework]
    assert v2[-1][0] == "429 TOO MANY REQUESTS"
    del made


@pytest.mark.parametrize("path", [V1, V2])
def test_an_unexpected_error_is_the_same_500(app: Any, path: str,
                                             monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    flask_app = app[0]
    door: Door = flask_app.extensions[EXTENSION]

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError(f"boom {API_KEY}")

    monkeypatch.setattr(Door, "enqueue_all", broken)
    body = v1() if path == V1 else json.dumps(SEED_CALL)
    status, _, text = both(app, path, body, headers={} if path == V1 else BEARER)
    assert status == "500 INTERNAL SERVER ERROR" and "trace" in text
    assert API_KEY not in caplog.text and "boom" in caplog.text
    assert door is flask_app.extensions[EXTENSION]


def test_an_unconfigured_door_answers_the_same(redis_url: str) -> None:
    made = _made(Settings(community_id=COMMUNITY, api_key=None, redis_url=redis_url))
    both(made, V1, v1())
    both(made, V2, json.dumps(SEED_CALL), headers=BEARER)


def test_behind_trusted_proxies_the_client_address_is_the_same(redis_url: str) -> None:
    """ProxyFix is in front of the lean path: the rate counts the forwarded client."""
    settings = Settings(community_id=COMMUNITY, api_key=Secret(API_KEY), redis_url=redis_url,
                        ingest_rate=0.2, trusted_proxies=1)
    flask_app = create_app(settings)
    statuses = [_ask(flask_app, V1, v1(), headers={"X-Forwarded-For": f"10.1.0.{i % 2}"})[0]
                for i in range(4)]
    # Two clients behind one proxy: one request each, then each is refused.
    assert statuses == ["200 OK", "200 OK", "429 TOO MANY REQUESTS", "429 TOO MANY REQUESTS"]


def test_the_server_gives_creates_their_own_threads() -> None:
    """`dispatcher.http.server` sends these to the small pool; all else to the big one."""
    assert create_request("POST", V1, {"CONTENT_LENGTH": "10"})
    assert create_request("POST", V2, {})
    assert not create_request("POST", V1, {"PREFER": "wait=5"})
    assert not create_request("GET", V1, {})
    assert not create_request("POST", "/emergency/remove_911", {})
    assert not create_request("POST", "/v2/emergency/servers/1/calls/911/5", {})
