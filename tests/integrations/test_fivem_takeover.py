"""Takeover mode, run by plain Lua 5.4 against a real dispatcher: the callcommands
plugin's /911 and /311, its SendCallApi event, the cadIncomingCall and EmergencyCallAdd
events it raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from dispatcher.simulator import CadSimulator
from tests.conftest import Proc
from tests.integrations.fivem_support import (
    Harness,
    events,
    stack,
    untagged,
)

pytestmark = pytest.mark.integration

API = "SonoranCAD::callcommands:"
TICKET = r"9\d{15,}"


def test_takeover_mode_serves_the_callcommands_plugins_commands_and_events(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    _env, url = stack(redis_url, sim, procs)
    api = API
    h = Harness(lua, url, [], {
        "HARNESS_COMMANDS": json.dumps([[7, "help", ["car", "on", "fire"]],
                                        [7, "311", ["noise", "complaint"]]]),
        "HARNESS_EVENTS": json.dumps([[api + "SendCallApi", True, "Some Script", "Grove St",
                                       "Shots fired", 7, True, False, "911"]]),
        "HARNESS_AWAIT_EVENT": api + "EmergencyCallAdd", "HARNESS_AWAIT_COUNT": "3",
    }, sonoran_dispatcher_takeover="true", sonoran_dispatcher_911_command="help")
    harnesses.append(h)
    h.finish()

    incoming = events(h, api + "cadIncomingCall")
    added = events(h, api + "EmergencyCallAdd")
    assert sorted(a[3] for a in incoming) == ["Shots fired", "car on fire", "noise complaint"]
    by_description = {c["call"]["description"]: c for c in sim.calls()}
    assert len(sim.calls()) == 3
    # EmergencyCallAdd(source, the CAD's own call id), as the plugin raises it.
    assert sorted(a[1] for a in added) == sorted(c["cad_id"] for c in sim.calls())
    assert all(a[0] == 7 for a in added)

    fire = untagged(by_description["car on fire"]["call"])
    uid = next(a[5] for a in incoming if a[3] == "car on fire")
    assert fire == {
        "serverId": "1", "isEmergency": True, "caller": "Jane Player", "location": "Unknown",
        "description": "car on fire", "deleteAfterMinutes": 30,
        "metaData": {"callerPlayerId": "7", "uuid": uid, "silentAlert": "false",
                     "useCallLocation": "false", "x": "215.5", "y": "-810.25", "z": "30.75"},
    }
    assert untagged(by_description["noise complaint"]["call"])["isEmergency"] is False
    shots = untagged(by_description["Shots fired"]["call"])
    assert shots["caller"] == "Some Script" and shots["location"] == "Grove St"
    assert shots["metaData"]["silentAlert"] == "true"



