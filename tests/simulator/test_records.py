"""dispatcher.simulator.records: ids that never repeat, and no API key in any record."""

from __future__ import annotations

import json

import pytest
import requests

from dispatcher.simulator import FIRST_CALL_ID, CadSimulator
from tests.simulator.simkit import KEY, TIMEOUT, WRONG_KEY, post_v1, post_v2, v1_body


def test_v1_ids_are_numeric_and_increase(sim: CadSimulator, session: requests.Session) -> None:
    texts = [post_v1(session, sim).text for _ in range(3)]

    assert texts == [f"EMERGENCY CALL ADDED ID: {FIRST_CALL_ID + i}" for i in range(3)]
    assert [c["cad_id"] for c in sim.calls()] == [FIRST_CALL_ID + i for i in range(3)]


def test_api_key_never_appears_in_records_or_control_output(
    sim: CadSimulator, session: requests.Session
) -> None:
    post_v1(session, sim)
    post_v1(session, sim, v1_body(key=WRONG_KEY))
    post_v1(session, sim, json.dumps(v1_body())[:-5])  # truncated: not valid JSON
    post_v2(session, sim)
    post_v2(session, sim, key=WRONG_KEY)
    sim.set_fault("commit_then_drop", count=1)
    with pytest.raises(requests.ConnectionError):
        post_v1(session, sim)

    records = sim.received()
    dumps = json.dumps(records) + json.dumps(sim.calls()) + json.dumps(sim.stats())
    served = "".join(
        requests.get(f"{sim.control_url}{p}", timeout=TIMEOUT).text
        for p in ("/received", "/calls", "/stats")
    )

    for secret in (KEY, WRONG_KEY):
        assert secret not in dumps
        assert secret not in served
    assert len(records) == 6
    assert records[0]["body"]["key"] == "***"
    assert '"key": "***"' in records[0]["raw"]
    assert records[2]["body"] is None
    assert records[3]["headers"]["Authorization"] == "***"
