"""The CAD's own Python SDK (``Sonoran.py``, import name ``sonoran``) pointed at our door:
one base URL for the whole CAD API. Real processes (web, worker, scheduler) in front of
the CAD simulator, speaking v2 as the SDK does: create is queued by our door, get calls
and the other endpoints are passed through, delete goes through our removal door.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sonoran import Instance, productEnums

from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, COMMUNITY, Proc, base_env, wait_for
from tests.http.httpkit import Web, start_web

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    web: Web
    sim: CadSimulator
    client: redis.Redis

    def sdk(self) -> Any:
        """The SDK's CAD manager, its base URL ours."""
        return Instance(apiKey=API_KEY, communityId=COMMUNITY, product=productEnums.CAD,
                        serverId=1, cadApiUrl=self.web.url, timeout=15).cad

    def state(self, call_id: str) -> str | None:
        found = self.client.hget(f"dispatcher:call:{call_id}", "state")
        return None if found is None else found.decode()


@pytest.fixture(scope="module")
def stack(redis_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs: Path = tmp_path_factory.mktemp("sdk")
    client = redis.Redis.from_url(redis_base_url)
    client.flushdb()
    sim = CadSimulator(community_id=COMMUNITY, api_key=API_KEY).start()
    env = base_env(redis_base_url, sim, SONORAN_API_VERSION=2)
    started: list[Proc] = []

    def start(args: list[str], env: dict[str, str], name: str | None = None) -> Proc:
        proc = Proc(args, env, logs / f"{name or args[0]}.log")
        started.append(proc)
        return proc

    try:
        start(["worker"], env)
        start(["scheduler"], env)
        yield Stack(start_web(start, env), sim, client)
    finally:
        for proc in started:
            proc.stop(timeout=10)
        sim.stop()
        client.flushdb()
        client.close()


def create(stack: Stack, caller: str) -> str:
    """Create a call with the SDK; our id, once the worker delivered it."""
    made = stack.sdk().createEmergencyCallV2({
        "serverId": 1, "isEmergency": True, "caller": caller,
        "location": "Route 68 / Joshua Rd", "description": "Two-car collision",
        "metaData": {"postal": "350"}})
    assert made.success, made.reason
    assert made.data["status"] == "queued" and made.data["caller"] == caller
    call_id: str = made.data["id"]
    wait_for(lambda: stack.state(call_id) == "delivered", 60, message="the delivery")
    return call_id


def test_create_get_calls_and_other_endpoints_through_our_door(stack: Stack) -> None:
    call_id = create(stack, "SDK Caller")
    cad = stack.sdk()

    listed = cad.getCallsV2({"closedLimit": 0, "closedOffset": 0, "type": 1})
    assert listed.success, listed.reason
    tags = [c["metaData"].get("dispatcherCallId") for c in listed.data["EmergencyCalls"]]
    assert call_id in tags, "the CAD's own list, passed through"

    version = cad.getVersionV2()
    assert (version.success, version.data) == (True, {"version": 3})
    moved = cad.updateUnitLocationsV2({"updates": [{"apiId": "steam:1", "location": "Sandy"}]})
    assert (moved.success, moved.data) == (True, {"updated": 1})
    refused = cad.getFiveMConfigurationV2()
    assert not refused.success and refused.reason == "NOT FOUND", "the CAD's own 404"
    paths = [r["path"] for r in stack.sim.received()]
    assert "/v2/general/version" in paths
    assert "/v2/emergency/servers/1/unit-locations" in paths


def test_delete_with_the_id_create_answered(stack: Stack) -> None:
    made = stack.sdk().createEmergencyCallV2({
        "serverId": 1, "isEmergency": True, "caller": "To Delete", "location": "Paleto",
        "description": "Prank"})
    # callId is the call's ticket: a positive integer, as the SDK insists.
    ticket = made.data["callId"]
    assert isinstance(ticket, int) and ticket > 9 * 10**15
    gone = stack.sdk().deleteEmergencyCallV2(ticket)
    assert gone.success, gone.reason
    assert gone.data["id"] == made.data["id"]
    assert gone.data["status"] in ("cancelled", "pending", "removing")
    wait_for(lambda: stack.state(made.data["id"]) in ("cancelled", "removed"), 60,
             message="taken back")


def test_delete_a_delivered_call_by_its_ticket(stack: Stack) -> None:
    call_id = create(stack, "Ticket Caller")
    cad_id = stack.client.hget(f"dispatcher:call:{call_id}", "cad_call_id")
    assert cad_id is not None
    ticket = int(stack.client.hget(f"dispatcher:call:{call_id}", "ticket") or 0)
    assert ticket > 9 * 10**15

    gone = stack.sdk().deleteEmergencyCallV2(ticket)

    assert gone.success, gone.reason
    assert gone.data == {"callId": ticket, "serverId": 1, "id": call_id, "status": "removing"}
    wait_for(lambda: stack.state(call_id) == "removed", 60, message="the removal")
    assert int(cad_id) not in [c["callId"] for c in stack.sim.active("1")]
