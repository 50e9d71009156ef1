"""The API key stays on the server: the resource warns, once, when clients can read it.

A client can read a convar only when the server replicated it (`setr`). The resource's
client.lua, run by the harness for each connected player in a sandbox with client
natives only, tells the server when it can read ``sonoran_apiKey``, sending a boolean,
never the key; keycheck.lua logs one warning. No dispatcher is needed: no call is made.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.integrations.fivem_support import RESOURCE, Harness

pytestmark = pytest.mark.integration

#: Nothing listens here: these tests make no request.
NOWHERE = "http://127.0.0.1:9"
EVENT = "sonoran_dispatcher:apiKeyReplicated"


def net_events(h: Harness) -> list[dict[str, Any]]:
    """Every client -> server event the harness saw: {"source", "name", "args"}."""
    return [json.loads(line[len("NET "):]) for line in h.lines if line.startswith("NET ")]


def warnings(h: Harness) -> list[str]:
    return [line for line in h.lines if "can read sonoran_apiKey" in line]


def test_a_key_set_with_setr_is_reported_by_clients_and_warned_about_once(
    lua: str, harnesses: list[Harness],
) -> None:
    # `setr sonoran_apiKey ...`: the server and every client read the same value.
    h = Harness(lua, NOWHERE, [], {
        "HARNESS_CLIENTS": json.dumps([7, 8]),
        "HARNESS_CLIENT_CONVARS": json.dumps({"sonoran_apiKey": API_KEY}),
        "HARNESS_AWAIT_IDLE": "1",
    })
    harnesses.append(h)
    h.finish()

    # Each client says it can read the key, with a boolean and nothing else.
    assert net_events(h) == [{"source": 7, "name": EVENT, "args": [True]},
                             {"source": 8, "name": EVENT, "args": [True]}]
    (warning,) = warnings(h)
    assert warning.startswith("[sonoran_dispatcher] ^1WARNING: player 7 can read sonoran_apiKey")
    assert "`setr`" in warning and "`set`" in warning
    assert "dropped net event" not in h.output, "the server registered it as a net event"
    assert API_KEY not in h.output


def test_a_key_set_with_set_stays_on_the_server_and_nothing_is_said(
    lua: str, harnesses: list[Harness],
) -> None:
    # `set sonoran_apiKey ...`: the server reads it, clients see no such convar.
    h = Harness(lua, NOWHERE, [], {
        "HARNESS_CLIENTS": json.dumps([7]),
        "HARNESS_CLIENT_CONVARS": json.dumps({"sonoran_dispatcher_debug": "1"}),
        "HARNESS_AWAIT_IDLE": "1",
    })
    harnesses.append(h)
    h.finish()
    assert net_events(h) == []
    assert warnings(h) == []
    assert "SCRIPT ERROR" not in h.output


def test_a_false_report_or_a_stray_value_warns_of_nothing(
    lua: str, harnesses: list[Harness],
) -> None:
    # Only `true` counts: whatever else a (modified) client sends is ignored.
    h = Harness(lua, NOWHERE, [], {
        "HARNESS_EVENTS": json.dumps([[EVENT, False], [EVENT, "yes"]]),
        "HARNESS_AWAIT_IDLE": "1",
    })
    harnesses.append(h)
    h.finish()
    assert warnings(h) == []


def test_the_client_script_is_declared_and_holds_no_server_secret() -> None:
    manifest = (RESOURCE / "fxmanifest.lua").read_text()
    assert re.search(r"^client_script 'client.lua'$", manifest, re.M)
    assert "'keycheck.lua'" in manifest
    client = (RESOURCE / "client.lua").read_text()
    # The only thing it sends is `true`: the key's value never leaves the client.
    sends = re.findall(r"TriggerServerEvent\((.*)\)", client)
    assert sends == [f"'{EVENT}', true"]
