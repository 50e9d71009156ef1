"""Row "the key in a URL path or Idempotency-Key": 400 (problem+json on v2, text on v1),
never 500; nothing queued, and the key in no answer and no log line. (It was a 500: the
door checked the body for the key but not the path's serverId or the header's key, and
the producer's own check then raised an InvalidCall nobody caught.)"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from dispatcher.records import Records
from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, Proc, base_env
from tests.http.httpkit import seed_body, seed_call, start_web

pytestmark = pytest.mark.integration

V2_CALL = {"caller": "Jane Doe", "location": "Route 68", "description": "Crash"}


def test_the_key_in_the_path_or_the_idempotency_header_is_a_400(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    web = start_web(procs, base_env(redis_url, sim))
    answers = []
    for server_id in (API_KEY, f"x{API_KEY}y"):
        answer = web.v2(json.dumps(V2_CALL), server_id=server_id)
        answers.append(answer)
        assert answer.status_code == 400, answer.text
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        problem = answer.json()
        assert "path (serverId) contains the API key" in problem["detail"]
        assert problem["field"] == "serverId" and problem["status"] == 400
    unauthenticated = web.v2(json.dumps(V2_CALL), server_id=API_KEY, key=None)
    assert unauthenticated.status_code == 400, "refused before the key is even checked"
    answers.append(unauthenticated)
    for header in (API_KEY, f"order-{API_KEY}"):
        v2 = web.v2(json.dumps(V2_CALL), **{"Idempotency-Key": header})
        assert v2.status_code == 400 and v2.json()["status"] == 400, v2.text
        assert "Idempotency-Key header contains the API key" in v2.json()["detail"]
        v1 = web.v1(seed_body([seed_call()]), **{"Idempotency-Key": header})
        assert v1.status_code == 400, v1.text
        assert v1.headers["Content-Type"].startswith("text/plain")
        assert v1.text.startswith("INVALID REQUEST: the Idempotency-Key header contains the "
                                  "API key")
        answers += [v1, v2]
    for answer in answers:
        assert API_KEY not in answer.text
    client = redis.Redis.from_url(redis_url)
    assert Records(client).stats()["enqueued"] == 0, "nothing was queued"
    assert not [k for k in client.keys("*") if API_KEY.encode() in k], "no key in key names"
    client.close()
    log = web.proc.output()
    assert API_KEY not in log
    assert "INTERNAL" not in log and "Traceback" not in log, log
