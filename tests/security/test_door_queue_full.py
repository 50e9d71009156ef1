"""Row "one producer can bury everyone" (the door's share of the backlog cap): a
QueueFull from the producer is 503 QUEUE FULL with Retry-After, distinct from QUEUE
UNAVAILABLE, on v1 and v2 and in the partial-failure answer of a multi-call request."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from dispatcher.call import Call
from dispatcher.errors import QueueFull
from dispatcher.http.app import create_app
from dispatcher.http.doorrules import QUEUE_FULL_RETRY_AFTER_S
from dispatcher.producer import Producer
from dispatcher.settings import Secret, Settings
from tests.conftest import API_KEY, COMMUNITY
from tests.http.httpkit import V1, seed_body, seed_call, v2_path

FULL = "the backlog holds 50000 calls waiting (DISPATCHER_MAX_BACKLOG); the call was not taken"


class FullAfter(Producer):
    """A real Producer (on fakeredis) whose backlog is full after ``room`` calls."""

    def __init__(self, room: int) -> None:
        settings = Settings(community_id=COMMUNITY, api_key=Secret(API_KEY))
        super().__init__(settings, client=fakeredis.FakeRedis())
        self.room = room
        self.taken: list[str] = []

    def enqueue(self, call: Call, source: str = "api", take_from: Any = None) -> str:
        if len(self.taken) >= self.room:
            raise QueueFull(FULL)
        self.taken.append(f"01TEST{len(self.taken):020d}")
        return self.taken[-1]

    def of(self, community: str | None) -> Any:
        return self  # one community

    def keys(self) -> list[str]:
        return [API_KEY]

    def enqueue_ticketed(self, call: Call, source: str = "api", *,
                         notify: bool = False) -> tuple[str, int | None]:
        # No ticket (a call recorded before tickets): the door names our id instead.
        return self.enqueue(call, source), None


def _door(room: int) -> FlaskClient:
    producer = FullAfter(room)
    return create_app(producer.settings, producer=producer).test_client()


def test_v1_answers_503_queue_full_with_retry_after() -> None:
    answer = _door(0).post(V1, data=seed_body([seed_call()]))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER_S)
    assert answer.text == (f"QUEUE FULL: {FULL}. Retry in {QUEUE_FULL_RETRY_AFTER_S} s. "
                           "No call of this request was queued.")
    assert "QUEUE UNAVAILABLE" not in answer.text


def test_v2_answers_a_503_problem_that_says_queue_full() -> None:
    answer = _door(0).post(v2_path(), data=json.dumps(
        {"caller": "a", "location": "b", "description": "c"}),
        headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 503
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER_S)
    assert answer.json["detail"].startswith(f"queue full: {FULL}. The call was not queued")


def test_a_multi_call_request_names_what_was_queued_before_the_cap() -> None:
    answer = _door(2).post(V1, data=seed_body([seed_call(i) for i in range(4)]))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER_S)
    assert answer.text.startswith(f"QUEUE FULL: {FULL}. Retry in")
    assert "2 of 4 calls were queued before the failure (data[0..1], ID: " in answer.text


@pytest.mark.parametrize("room", [0, 1])
def test_never_a_500(room: int) -> None:
    answer = _door(room).post(V1, data=seed_body([seed_call(), seed_call(1)]))
    assert answer.status_code == 503 and "INTERNAL" not in answer.text
