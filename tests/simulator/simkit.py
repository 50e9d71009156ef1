"""Helpers of the simulator tests: the credentials, the two calls, and posting them."""

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


def post(version: int, session: requests.Session, sim: CadSimulator) -> requests.Response:
    """The default call of API `version` (1 or 2)."""
    return post_v1(session, sim) if version == 1 else post_v2(session, sim)


def control(sim: CadSimulator, path: str, body: dict[str, Any] | None = None) -> Any:
    if body is None and path in ("/received", "/calls", "/stats"):
        response = requests.get(f"{sim.control_url}{path}", timeout=TIMEOUT)
    else:
        response = requests.post(f"{sim.control_url}{path}", json=body or {}, timeout=TIMEOUT)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.status_code, response.json()
