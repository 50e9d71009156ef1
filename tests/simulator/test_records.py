"""dispatcher.simulator.records: ids that never repeat, and no API key in any record."""

from __future__ import annotations

import json

import pytest
import requests

from dispatcher.simulator import FIRST_CALL_ID, CadSimulator
from tests.simulator.simkit import (
    CALL,
    KEY,
    TIMEOUT,
    V2_CALL,
    WRONG_KEY,
    created_id,
    delete_v2,
    post_v1,
    post_v2,
    read_v1,
    read_v2,
    remove_v1,
    remove_v1_body,
    v1_body,
    v1_read_body,
)


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


def test_api_key_never_appears_in_the_records_of_reads_and_removals(
    sim: CadSimulator, session: requests.Session
) -> None:
    read_v1(session, sim)
    read_v1(session, sim, v1_read_body() | {"key": WRONG_KEY})
    remove_v1(session, sim, remove_v1_body(1))
    read_v2(session, sim)
    delete_v2(session, sim, 1, key=WRONG_KEY)

    records = sim.received()

    assert KEY not in json.dumps(records)
    assert WRONG_KEY not in json.dumps(records)
    assert [r["body"]["key"] for r in records[:3]] == ["***"] * 3
    assert records[3]["headers"]["Authorization"] == "***"
    assert records[4]["headers"]["Authorization"] == "***"


def test_created_calls_record_whether_and_how_they_left_the_list(
    sim: CadSimulator, session: requests.Session
) -> None:
    listed = created_id(post_v1(session, sim))
    removed = created_id(post_v2(session, sim))
    delete_v2(session, sim, removed)

    records = {c["cad_id"]: c for c in sim.calls()}

    assert (records[listed]["active"], records[listed]["ended"]) == (True, None)
    assert records[listed]["ended_at"] is None
    assert (records[removed]["active"], records[removed]["ended"]) == (False, "removed")
    assert records[removed]["ended_at"] >= records[removed]["at"]


def test_stats_count_the_list_removals_and_reused_dispatcher_tags(
    sim: CadSimulator, session: requests.Session
) -> None:
    def tagged(tag: str, caller: str) -> dict[str, object]:
        return {**V2_CALL, "caller": caller, "metaData": {"dispatcherCallId": tag}}

    first = created_id(post_v2(session, sim, tagged("call-a", "A")))
    post_v2(session, sim, tagged("call-a", "A again"))  # a retry that created a second call
    post_v2(session, sim, tagged("call-b", "B"))
    post_v1(session, sim)  # untagged, twice: a duplicate, but not of a tag
    post_v1(session, sim)
    post_v1(session, sim, v1_body(data=[{**CALL, "metaData": {"dispatcherCallId": "call-b"}}]))
    delete_v2(session, sim, first)

    stats = sim.stats()

    assert stats["created"] == 6
    assert stats["active"] == 5
    assert stats["removed"] == 1
    assert stats["duplicate_tags"] == 2
    assert stats["duplicates"] == 1
    assert {"received", "by_status", "unanswered"} <= set(stats)


def test_active_returns_the_list_as_v2_answers_it(
    sim: CadSimulator, session: requests.Session
) -> None:
    on_one = created_id(post_v1(session, sim))
    on_seven = created_id(post_v2(session, sim, server="7"))

    everything = sim.active()
    server_seven = sim.active("7")

    assert [c["callId"] for c in everything] == [on_one, on_seven]
    assert server_seven == read_v2(session, sim, server="7").json()["EmergencyCalls"]
    assert sim.active("2") == []
