"""Helpers of the simulator tests: the credentials, the two calls, and the API's requests."""

from __future__ import annotations

import json
from typing import Any

import requests

from dispatcher.simulator import CadSimulator
from tests.conftest import SEED_CALL

COMMUNITY = "test-community"
KEY = "s3cr3t-Key-9f8e7d"
WRONG_KEY = "old-Key-1a2b3c4d"
#: A request that does not answer within this is a failure (not a measured bound).
TIMEOUT = 5.0
CALL: dict[str, Any] = SEED_CALL
V2_CALL: dict[str, Any] = {
    "isEmergency": False,
    "caller": "John Roe",
    "location": "Alta St",
    "description": "Noise complaint",
    "metaData": {"postal": "7015a"},
}


def v1_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": COMMUNITY, "key": KEY, "type": "CALL_911", "data": [CALL]}
    body.update(overrides)
    return body


def post_v1(
    session: requests.Session, sim: CadSimulator, body: Any = None, *, timeout: float = TIMEOUT
) -> requests.Response:
    payload = v1_body() if body is None else body
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return session.post(f"{sim.url}/emergency/call_911", data=data, timeout=timeout)


def post_v2(
    session: requests.Session,
    sim: CadSimulator,
    body: Any = None,
    *,
    server: str = "1",
    key: str | None = KEY,
    timeout: float = TIMEOUT,
) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    payload = V2_CALL if body is None else body
    data = payload if isinstance(payload, str) else json.dumps(payload)
    url = f"{sim.url}/v2/emergency/servers/{server}/calls/911"
    return session.post(url, data=data, headers=headers, timeout=timeout)


def post(
    version: int, session: requests.Session, sim: CadSimulator, *, timeout: float = TIMEOUT
) -> requests.Response:
    """The default call of API `version` (1 or 2)."""
    if version == 1:
        return post_v1(session, sim, timeout=timeout)
    return post_v2(session, sim, timeout=timeout)


def v1_read_body(server: Any = "1", **query: Any) -> dict[str, Any]:
    data = {"serverId": server, "closedLimit": 0, "closedOffset": 0, **query}
    return {"id": COMMUNITY, "key": KEY, "type": "GET_CALLS", "data": [data]}


def read_v1(
    session: requests.Session, sim: CadSimulator, body: Any = None
) -> requests.Response:
    """v1 get_calls: the body given, or server 1's calls of every type."""
    payload = v1_read_body() if body is None else body
    return session.post(f"{sim.url}/emergency/get_calls", json=payload, timeout=TIMEOUT)


def read_v2(
    session: requests.Session,
    sim: CadSimulator,
    *,
    server: str = "1",
    key: str | None = KEY,
    query: str = "closedLimit=0&closedOffset=0&type=1",
) -> requests.Response:
    """v2 GET calls (emergency calls only unless query says otherwise)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    url = f"{sim.url}/v2/emergency/servers/{server}/calls?{query}"
    return session.get(url, headers=headers, timeout=TIMEOUT)


def remove_v1_body(*call_ids: Any, server: Any = "1") -> dict[str, Any]:
    data = [{"serverId": server, "callId": c} for c in call_ids]
    return {"id": COMMUNITY, "key": KEY, "type": "REMOVE_911", "data": data}


def remove_v1(
    session: requests.Session, sim: CadSimulator, body: dict[str, Any]
) -> requests.Response:
    return session.post(f"{sim.url}/emergency/remove_911", json=body, timeout=TIMEOUT)


def delete_v2(
    session: requests.Session,
    sim: CadSimulator,
    call_id: Any,
    *,
    server: str = "1",
    key: str | None = KEY,
) -> requests.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    url = f"{sim.url}/v2/emergency/servers/{server}/calls/911/{call_id}"
    return session.delete(url, headers=headers, timeout=TIMEOUT)


def created_id(response: requests.Response) -> int:
    """The CAD id a v1 or v2 create answered."""
    if response.headers["Content-Type"].startswith("application/json"):
        return int(response.json()["callId"])
    return int(response.text.rsplit(" ", 1)[-1])


def control(sim: CadSimulator, path: str, body: dict[str, Any] | None = None) -> Any:
    if body is None and path.split("?")[0] in ("/received", "/calls", "/stats", "/active"):
        response = requests.get(f"{sim.control_url}{path}", timeout=TIMEOUT)
    else:
        response = requests.post(f"{sim.control_url}{path}", json=body or {}, timeout=TIMEOUT)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.status_code, response.json()
