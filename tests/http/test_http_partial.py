"""The queue failing part-way through a multi-call request (in process, a stub producer).

Redis dying between two calls of one request cannot be timed against real processes, so
this drives the Flask app with a producer that fails at a chosen call. What it shows:
nothing is half-validated (an invalid call queues nothing), and when the queue fails
after some calls were queued the 503 names exactly those, with Retry-After.
"""

from __future__ import annotations

from typing import Any, cast

import fakeredis
import pytest
from flask.testing import FlaskClient

from dispatcher.call import Call
from dispatcher.errors import QueueUnavailable
from dispatcher.http.app import create_app
from dispatcher.http.ingest import RETRY_AFTER_S
from dispatcher.producer import Producer
from dispatcher.settings import Secret, Settings
from tests.conftest import API_KEY, COMMUNITY
from tests.http.httpkit import seed_body, seed_call


class StubProducer:
    """Queues into a list; raises QueueUnavailable at call number ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.client = fakeredis.FakeRedis()
        self.fail_at = fail_at
        self.queued: list[Call] = []

    def enqueue(self, call: Call, source: str = "api", take_from: Any = None) -> str:
        if self.fail_at is not None and len(self.queued) >= self.fail_at:
            raise QueueUnavailable("the queue (Redis) could not be reached within 3s: "
                                   "Connection refused")
        self.queued.append(call)
        return f"01ID{len(self.queued):022d}"

    def of(self, community: str | None) -> Any:
        return self  # one community

    def keys(self) -> list[str]:
        return [API_KEY]

    def enqueue_ticketed(self, call: Call, source: str = "api", *,
                         notify: bool = False) -> tuple[str, int | None]:
        # No ticket (a call recorded before tickets): the door names our id instead.
        return self.enqueue(call, source), None


def _client(stub: StubProducer) -> FlaskClient:
    settings = Settings(community_id=COMMUNITY, api_key=Secret(API_KEY))
    return create_app(settings, cast(Producer, stub)).test_client()


def test_an_invalid_last_call_queues_nothing() -> None:
    stub = StubProducer()
    answer = _client(stub).post("/emergency/call_911",
                                data=seed_body([seed_call(0), seed_call(1), {"caller": 1}]))
    assert answer.status_code == 400
    assert answer.get_data(as_text=True).startswith("INVALID CALL: data[2]: ")
    assert stub.queued == []


@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_queue_failing_part_way_names_what_was_queued(fail_at: int) -> None:
    stub = StubProducer(fail_at=fail_at)
    answer = _client(stub).post("/emergency/call_911",
                                data=seed_body([seed_call(i) for i in range(3)]))
    text = answer.get_data(as_text=True)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert text.startswith("QUEUE UNAVAILABLE: the queue (Redis) could not be reached")
    assert [c.caller for c in stub.queued] == [f"Jane Doe {i}" for i in range(fail_at)]
    if fail_at == 0:
        assert text.endswith("No call of this request was queued.")
    else:
        ids = ",".join(f"01ID{i + 1:022d}" for i in range(fail_at))
        assert (f"{fail_at} of 3 calls were queued before the failure "
                f"(data[0..{fail_at - 1}], ID: {ids}); the others were not.") in text
        assert "Idempotency-Key" in text


def test_a_retry_with_idempotency_keys_carries_the_same_keys() -> None:
    stub = StubProducer(fail_at=1)
    client = _client(stub)
    body = seed_body([seed_call(0), seed_call(1)])
    assert client.post("/emergency/call_911", data=body,
                       headers={"Idempotency-Key": "k1"}).status_code == 503
    stub.fail_at = None
    assert client.post("/emergency/call_911", data=body,
                       headers={"Idempotency-Key": "k1"}).status_code == 200
    # The producer maps a known key to the id it already has (see the integration
    # tests): call 0 keeps its key on the retry, so it is not queued twice.
    assert [c.idempotency_key for c in stub.queued] == ["k1/0", "k1/0", "k1/1"]


def test_an_unexpected_error_is_a_500_without_details_or_the_key(
    caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(StubProducer):
        def enqueue(self, call: Call, source: str = "api", take_from: Any = None) -> str:
            raise RuntimeError(f"boom {API_KEY}")

    answer = _client(Broken()).post("/emergency/call_911", data=seed_body([seed_call()]))
    assert answer.status_code == 500
    text = answer.get_data(as_text=True)
    assert text.startswith("INTERNAL ERROR (trace ") and API_KEY not in text
    trace = text.removeprefix("INTERNAL ERROR (trace ").rstrip(")")
    logged = [r.getMessage() for r in caplog.records if r.name == "dispatcher.web"]
    assert any(trace in m and "RuntimeError: boom ***" in m for m in logged), logged
    assert all(API_KEY not in m for m in logged)
