"""dispatcher.http.handlers: each error answer, plain text for v1, problem+json under /v2/.

In process (Flask's test client) with a stub producer: no Redis, no sockets.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import fakeredis
import pytest
from flask.testing import FlaskClient

from dispatcher.call import Call
from dispatcher.http.app import create_app
from dispatcher.http.ingest import MAX_BODY_BYTES
from dispatcher.producer import Producer
from dispatcher.settings import Secret, Settings
from tests.conftest import API_KEY, COMMUNITY, SEED_CALL

V2 = "/v2/emergency/servers/1/calls/911"
BEARER = {"Authorization": f"Bearer {API_KEY}"}


class StubProducer:
    """Queues into a list, or raises what it is told to."""

    def __init__(self, raises: Exception | None = None) -> None:
        self.client = fakeredis.FakeRedis()
        self.raises = raises
        self.queued: list[Call] = []

    def enqueue(self, call: Call, source: str = "api", take_from: Any = None) -> str:
        if self.raises is not None:
            raise self.raises
        self.queued.append(call)
        return f"01ID{len(self.queued):022d}"

    def of(self, community: str | None) -> Any:
        return self  # one community

    def keys(self) -> list[str]:
        return [API_KEY]

    def enqueue_ticketed(self, call: Call, source: str = "api", *,
                         notify: bool = False) -> tuple[str, int | None]:
        call_id = self.enqueue(call, source)
        return call_id, 9 * 10**15 + len(self.queued)


def client(producer: StubProducer | None = None) -> FlaskClient:
    settings = Settings(community_id=COMMUNITY, api_key=Secret(API_KEY))
    return create_app(settings, cast(Producer, producer or StubProducer())).test_client()


def v1_body() -> bytes:
    return json.dumps({"id": COMMUNITY, "key": API_KEY, "type": "CALL_911",
                       "data": [SEED_CALL]}).encode()


def problem_of(answer: Any) -> dict[str, Any]:
    assert answer.mimetype == "application/problem+json"
    body: dict[str, Any] = answer.get_json(force=True)
    assert body["status"] == answer.status_code and len(body["traceId"]) == 32
    return body


def test_not_found() -> None:
    """Outside the CAD's shapes (which are passed through: tests/http/test_http_passthrough.py)."""
    app = client()
    plain = app.get("/nowhere")
    v2 = app.options("/v2/nowhere")  # /v2/ with a method the CAD's API has not

    assert (plain.status_code, plain.get_data(as_text=True)) == (404, "NOT FOUND")
    assert plain.mimetype == "text/plain"
    assert v2.status_code == 404
    assert problem_of(v2)["detail"] == "NOT FOUND"


def test_method_not_allowed_names_the_allowed_methods() -> None:
    app = client()
    plain = app.get("/emergency/call_911")
    v2 = app.get(V2)

    assert (plain.status_code, plain.get_data(as_text=True)) == (405, "METHOD NOT ALLOWED")
    assert "POST" in plain.headers["Allow"]
    assert v2.status_code == 405 and "POST" in v2.headers["Allow"]
    assert problem_of(v2)["detail"].startswith("use ") and "POST" in problem_of(v2)["detail"]


def test_a_body_over_the_limit_is_413() -> None:
    app = client()
    big = b"x" * (MAX_BODY_BYTES + 1)
    plain = app.post("/emergency/call_911", data=big)
    v2 = app.post(V2, data=big, headers=BEARER)

    assert plain.status_code == 413
    assert plain.get_data(as_text=True) == f"REQUEST TOO LARGE: at most {MAX_BODY_BYTES} bytes"
    assert v2.status_code == 413
    assert problem_of(v2)["detail"] == f"REQUEST TOO LARGE: at most {MAX_BODY_BYTES} bytes"


def test_a_compressed_body_is_415() -> None:
    app = client()
    gzip = {"Content-Encoding": "gzip"}
    plain = app.post("/emergency/call_911", data=v1_body(), headers=gzip)
    v2 = app.post(V2, data=b"{}", headers={**gzip, **BEARER})

    assert plain.status_code == 415
    assert plain.get_data(as_text=True).startswith("UNSUPPORTED CONTENT ENCODING")
    assert v2.status_code == 415
    assert problem_of(v2)["title"] == "Unsupported Media Type"


def test_an_unexpected_error_is_500_with_a_trace_and_a_redacted_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = client(StubProducer(raises=RuntimeError(f"boom near {API_KEY}")))
    with caplog.at_level(logging.ERROR, logger="dispatcher.web"):
        plain = app.post("/emergency/call_911", data=v1_body())
        v2 = app.post(V2, data=json.dumps({k: v for k, v in SEED_CALL.items()
                                           if k != "metaData"}), headers=BEARER)

    assert plain.status_code == 500
    assert plain.get_data(as_text=True).startswith("INTERNAL ERROR (trace ")
    assert v2.status_code == 500 and "internal error (trace" in problem_of(v2)["detail"]
    logged = [r.getMessage() for r in caplog.records if r.name == "dispatcher.web"]
    assert len(logged) == 2 and all("RuntimeError" in m for m in logged)
    assert all(API_KEY not in m for m in logged)
    assert API_KEY not in plain.get_data(as_text=True) + v2.get_data(as_text=True)


def test_the_openapi_document_is_served_as_json() -> None:
    answer = client().get("/openapi.json")

    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.get_json()["openapi"].startswith("3.1")
