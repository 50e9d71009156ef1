"""One simulator serving several communities, as one CAD host does: each its own id, key,
calls and rate-limit window."""

from __future__ import annotations

import requests

from dispatcher.simulator import CadSimulator
from tests.simulator.simkit import (
    KEY,
    control,
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

OTHER, OTHER_KEY = "other-community", "other-Key-5e6f7a8b"


def test_an_added_community_is_served_with_its_own_id_and_key(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.add_community(OTHER, OTHER_KEY)
    ours = post_v1(session, sim, v1_body(id=OTHER, key=OTHER_KEY))
    assert ours.status_code == 200 and ours.text.startswith("EMERGENCY CALL ADDED ID: ")
    # Its id with the main community's key, or the other way round, is refused as the CAD does.
    assert post_v1(session, sim, v1_body(id=OTHER, key=KEY)).text == "INVALID API KEY"
    assert post_v1(session, sim, v1_body(key=OTHER_KEY)).text == "INVALID API KEY"
    assert post_v2(session, sim, key=OTHER_KEY).status_code == 200
    assert post_v1(session, sim).status_code == 200  # the main community is unchanged
    received = sim.received()
    assert [r.get("community") for r in received] == [OTHER, OTHER, None, OTHER, None]
    assert OTHER_KEY not in repr(received)
    assert [c["community"] for c in sim.calls()] == [OTHER, OTHER, None]


def test_a_community_never_lists_or_removes_anothers_calls(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.add_community(OTHER, OTHER_KEY)
    theirs = created_id(post_v1(session, sim, v1_body(id=OTHER, key=OTHER_KEY)))
    mine = created_id(post_v1(session, sim))
    main_read = read_v1(session, sim)
    assert str(mine) in main_read.text and str(theirs) not in main_read.text
    other_read = read_v1(session, sim, v1_read_body() | {"id": OTHER, "key": OTHER_KEY})
    assert str(theirs) in other_read.text and str(mine) not in other_read.text
    v2 = read_v2(session, sim, key=OTHER_KEY)
    assert str(theirs) in v2.text and str(mine) not in v2.text
    # Removing another community's call answers as for a call that is not there.
    assert delete_v2(session, sim, mine, key=OTHER_KEY).status_code == 404
    remove_v1(session, sim, remove_v1_body(theirs))
    assert {c["cad_id"] for c in sim.calls() if c["active"]} == {theirs, mine}
    assert delete_v2(session, sim, theirs, key=OTHER_KEY).ok
    assert {c["cad_id"] for c in sim.calls() if c["active"]} == {mine}


def test_the_rate_limit_counts_each_communitys_key_on_its_own(
    sim: CadSimulator, session: requests.Session
) -> None:
    sim.add_community(OTHER, OTHER_KEY)
    sim.set_rate_limit(1, window_s=30.0)
    assert post_v1(session, sim).status_code == 200
    assert post_v1(session, sim, v1_body(id=OTHER, key=OTHER_KEY)).status_code == 200
    assert post_v1(session, sim).status_code == 429
    assert post_v1(session, sim, v1_body(id=OTHER, key=OTHER_KEY)).status_code == 429


def test_communities_are_added_through_the_control_port(
    sim: CadSimulator, session: requests.Session
) -> None:
    status, body = control(sim, "/communities", {"communities": [
        {"id": OTHER, "key": OTHER_KEY}, {"id": "third", "key": "third-Key-0000"}]})
    assert (status, body) == (200, {"ok": True, "added": 2})
    assert post_v1(session, sim, v1_body(id="third", key="third-Key-0000")).status_code == 200
    status, body = control(sim, "/communities", {"communities": [{"id": "x"}]})
    assert status == 400 and "'key' is required" in body["error"]
    status, body = control(sim, "/communities",
                           {"communities": [{"id": "fourth", "key": OTHER_KEY}]})
    assert status == 400 and "another community" in body["error"]
