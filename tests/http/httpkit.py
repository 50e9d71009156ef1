"""Helpers for the HTTP ingest tests: a real ``web`` process and the seed's request."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import requests

from tests.conftest import API_KEY, COMMUNITY, Proc, free_port, wait_for

V1 = "/emergency/call_911"


def v2_path(server_id: str = "1") -> str:
    return f"/v2/emergency/servers/{server_id}/calls/911"


def seed_call(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A call object exactly as the official resource's ``call911`` builds it."""
    call: dict[str, Any] = {
        "serverId": "1", "isEmergency": True, "caller": f"Jane Doe {i}",
        "location": f"Route 68 / Joshua Rd {i}", "description": f"Two-car collision {i}",
        "metaData": {"plate": f"8ABC{i:03d}", "postal": str(350 + i)},
    }
    call.update(overrides)
    return call


def seed_body(calls: list[Any], *, community: str = COMMUNITY, key: str = API_KEY,
              type_: str = "CALL_911") -> bytes:
    """The seed's request body as FiveM's json.encode writes it (compact)."""
    body = {"id": community, "key": key, "type": type_, "data": calls}
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Web:
    url: str
    proc: Proc

    def post(self, path: str, body: bytes | str, headers: dict[str, str] | None = None,
             timeout: float = 30) -> requests.Response:
        data = body.encode() if isinstance(body, str) else body
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        return requests.post(self.url + path, data=data, headers=hdrs, timeout=timeout)

    def v1(self, body: bytes | str, **headers: str) -> requests.Response:
        return self.post(V1, body, headers)

    def v2(self, body: bytes | str, server_id: str = "1", key: str | None = API_KEY,
           **headers: str) -> requests.Response:
        if key is not None:
            headers = {"Authorization": f"Bearer {key}", **headers}
        return self.post(v2_path(server_id), body, headers)


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def start_web(start: Callable[..., Proc], env: dict[str, str], port: int | None = None) -> Web:
    """Start ``dispatcher web`` and wait until it answers /healthz with 200."""
    port = port or free_port()
    proc = start(["web"], {**env, "PORT": str(port)}, name="web")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not proc.alive():
            raise AssertionError(f"web exited early:\n{proc.output()}")
        return _answers(url)

    wait_for(ready, 30, 0.1, "the web process to answer")
    return Web(url, proc)


def call_keys(client: redis.Redis) -> set[str]:
    """Ids of every call record in Redis."""
    return {k.decode().rsplit(":", 1)[1] for k in client.scan_iter("dispatcher:call:*",
                                                                    count=1000)}


def queued_tickets(text: str) -> list[str]:
    """The tickets of a v1 queued answer (numbers above 9e15, one per call)."""
    prefix = "EMERGENCY CALL QUEUED ID: "
    assert text.startswith(prefix), text
    tickets = text[len(prefix):].split(",")
    assert all(t.isdigit() and 9 * 10**15 < int(t) < 2**53 for t in tickets), text
    return tickets


def queued_ids(answer: Any) -> list[str]:
    """Our ids (ULIDs) of a v1 queued answer: its X-Dispatcher-Call-Id header, one per
    ticket in the text (a requests or a Flask test client response)."""
    text = answer.text if hasattr(answer, "text") else answer.get_data(as_text=True)
    ids = answer.headers["X-Dispatcher-Call-Id"].split(",")
    assert len(ids) == len(queued_tickets(text)), (text, ids)
    return ids
