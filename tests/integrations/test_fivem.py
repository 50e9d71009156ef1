"""The FiveM resource's core, run by plain Lua 5.4 against a real dispatcher: call911's
callback for accepted, queued and refused calls, the optional arguments, the Lua retry
queue (outage, 503, lost answer, KVP across a restart) and removeCall.

Takeover mode and its events: test_fivem_takeover.py; the API key's safety:
test_fivem_key.py; what they share: fivem_support.py and conftest.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, COMMUNITY, Proc, base_env, free_port, wait_for
from tests.integrations.fivem_support import (
    ADDED,
    JANE,
    JANE_SEED_CALL,
    QUEUED,
    RESOURCE,
    Harness,
    answer,
    stack,
    start_web,
    untagged,
)

pytestmark = pytest.mark.integration


def test_call911_answers_the_cads_own_text_first_as_the_official_resource_does(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    env, url = stack(redis_url, sim, procs)
    roe = ["John Roe", "Sandy Shores Airfield", "Smoke seen", "7015a", None]
    h = Harness(lua, url, [JANE, roe])
    harnesses.append(h)
    results = h.finish()

    # cb(text, ok): the CAD's own answer (Prefer: wait, the CAD answered in time), so a
    # script doing string.find(text, "EMERGENCY CALL ADDED") and reading %d+ keeps working.
    texts = {}
    for index in (1, 2):
        text, ok = answer(results[index])
        assert ok is True, h.output
        match = ADDED.match(text)
        assert match, text
        texts[index] = int(match["id"])

    by_caller = {c["call"]["caller"]: c for c in sim.calls()}
    assert len(sim.calls()) == 2
    assert by_caller["Jane Doe"]["cad_id"] == texts[1]
    assert by_caller["John Roe"]["cad_id"] == texts[2]
    assert untagged(by_caller["Jane Doe"]["call"]) == JANE_SEED_CALL
    assert untagged(by_caller["John Roe"]["call"]) == {
        "serverId": "1", "isEmergency": True, "caller": "John Roe",
        "location": "Sandy Shores Airfield", "description": "Smoke seen",
        "metaData": {"postal": "7015a"},
    }
    for received in sim.received():
        assert received["body"]["id"] == COMMUNITY
        assert received["body"]["type"] == "CALL_911"
    assert h.posts() == 2
    assert API_KEY not in h.output


def test_call911ex_gives_ok_id_and_text(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    _env, url = stack(redis_url, sim, procs)
    h = Harness(lua, url, [JANE], {"HARNESS_EXPORT": "call911Ex"})
    harnesses.append(h)
    result = h.finish()[1]
    assert result["argc"] == 3, result
    ok, call_id, text = result["args"]
    assert ok is True and text == f"EMERGENCY CALL ADDED ID: {call_id}", result
    wait_for(lambda: len(sim.calls()) == 1, 10, message="the call in the CAD")
    assert str(sim.calls()[0]["cad_id"]) == call_id


def test_call911_says_queued_when_the_cad_does_not_answer_within_the_wait(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    # The web process only: the call is safe in Redis, but nobody delivers it, so the
    # door's Prefer: wait=1 runs out and it answers that the call is queued.
    env = base_env(redis_url, sim, PORT=str(free_port()))
    start_web(procs, env)
    started = time.monotonic()
    second = ["Second Caller", "Paleto Bay", "Shots fired", "1021", None]
    h = Harness(lua, f"http://127.0.0.1:{env['PORT']}", [JANE, second],
                sonoran_dispatcher_wait="1")
    harnesses.append(h)
    results = h.finish()
    for index in (1, 2):
        text, ok = answer(results[index])
        assert ok is True and QUEUED.match(text), text
    assert QUEUED.match(answer(results[1])[0])["id"] != QUEUED.match(answer(results[2])[0])["id"]
    assert time.monotonic() - started >= 1.0, "the door waited for the CAD first"
    assert sim.received() == []
    assert h.posts() == 2, "a queued answer is final: no retry"


def test_wrong_api_key_is_refused_at_once_and_not_retried(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    env = base_env(redis_url, sim, PORT=str(free_port()))
    start_web(procs, env)
    wrong = "sk-wrong-KEY-fedcba9876543210"
    h = Harness(lua, f"http://127.0.0.1:{env['PORT']}", [JANE], sonoran_apiKey=wrong)
    harnesses.append(h)
    results = h.finish()

    assert results[1] == {"index": 1, "argc": 2, "args": ["INVALID API KEY", False]}
    assert h.posts() == 1, "a refusal is final: no retry"
    assert wrong not in h.output and API_KEY not in h.output
    assert sim.received() == []


def test_calls_wait_in_the_lua_queue_while_the_dispatcher_is_down(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    env, url = stack(redis_url, sim, procs, web=False)
    start_web(procs, env).stop()

    second = ["Second Caller", "Paleto Bay", "Shots fired", "1021", "ZZZ999"]
    third = ["Third Caller", "Mirror Park", "Fire", "8200", None]
    h = Harness(lua, url, [JANE, second, third], sonoran_dispatcher_queue_size="2",
                sonoran_serverId="2", sonoran_dispatcher_wait="0")
    harnesses.append(h)

    # The queue holds two calls; the third is refused at once rather than an older one lost.
    h.wait_line(r'^RESULT .*"index":3')
    assert answer(h.results()[3]) == ("RETRY QUEUE FULL", False)
    h.wait_line(r"not accepted \(dispatcher unreachable")
    h.wait_line(r"HARNESS POST .* -> 0", 5)
    assert sim.received() == []

    start_web(procs, env)
    results = h.finish()
    (first, first_ok), (second_text, second_ok) = answer(results[1]), answer(results[2])
    first_match, second_match = QUEUED.match(first), QUEUED.match(second_text)
    assert first_ok and first_match, h.output
    assert second_ok and second_match, h.output
    assert first_match["id"] != second_match["id"]
    assert h.posts() >= 3, "at least one failed attempt, then one per call"

    # Oldest first into the dispatcher: after the outage Jane's call is sent (and
    # accepted) before the second call. The order in which the dispatcher's
    # concurrent worker threads then reach the CAD is the dispatcher's business.
    accepted = [json.loads(line[7:]) for line in h.lines if line.startswith("RESULT ")]
    assert [r["index"] for r in accepted if r["args"][1] is True] == [1, 2], "oldest first"

    wait_for(lambda: len(sim.calls()) == 2, 30, message="the queued calls in the CAD")
    time.sleep(1.0)  # anything doubled would arrive by now
    by_caller = {c["call"]["caller"]: untagged(c["call"]) for c in sim.calls()}
    assert sorted(by_caller) == ["Jane Doe", "Second Caller"]
    assert by_caller["Jane Doe"] == {**JANE_SEED_CALL, "serverId": "2"}
    assert len(sim.calls()) == 2 and sim.stats()["duplicates"] == 0


def test_a_503_keeps_the_call_in_the_lua_queue_until_the_dispatcher_takes_it(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    env, url = stack(redis_url, sim, procs, web=False)
    # A web process without its API key answers every call 503 (it cannot check the
    # body's key): the operator's mistake must cost a delay, not the call.
    unconfigured = start_web(procs, {**env, "SONORAN_API_KEY": ""})
    h = Harness(lua, url, [JANE], sonoran_dispatcher_wait="0")
    harnesses.append(h)
    h.wait_line(r"not accepted \(HTTP 503: DISPATCHER NOT CONFIGURED")
    h.wait_line(r"HARNESS POST .* -> 503", 5)

    unconfigured.stop()
    start_web(procs, env)
    results = h.finish()
    text, ok = answer(results[1])
    assert ok is True and QUEUED.match(text), h.output
    wait_for(lambda: len(sim.calls()) == 1, 30, message="the call in the CAD")
    assert untagged(sim.calls()[0]["call"]) == JANE_SEED_CALL


def test_a_retry_after_a_lost_answer_does_not_double_the_call(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    env, url = stack(redis_url, sim, procs)
    # The dispatcher queues the call, but the game server never sees the answer (FiveM
    # reports a timeout): the resource sends it again with the same idempotencyKey.
    h = Harness(lua, url, [JANE], {"HARNESS_LOSE_RESPONSES": "1"},
                sonoran_communityID=None, sonoran_communityId=COMMUNITY,
                sonoran_dispatcher_wait="0")
    harnesses.append(h)
    results = h.finish()

    lost = h.wait_line(r"^HARNESS lost response 200 ")
    first_id = lost.rsplit("ID: ", 1)[1]
    assert answer(results[1]) == (f"EMERGENCY CALL QUEUED ID: {first_id}", True), \
        "the retry (same Idempotency-Key header) got the first attempt's id"
    assert h.posts() == 2

    wait_for(lambda: len(sim.calls()) == 1, 30, message="the call in the CAD")
    time.sleep(1.0)
    assert len(sim.calls()) == 1
    assert untagged(sim.calls()[0]["call"]) == JANE_SEED_CALL


def test_the_manifest_declares_a_cerulean_gta5_server_resource() -> None:
    text = (RESOURCE / "fxmanifest.lua").read_text()
    assert re.search(r"^fx_version 'cerulean'$", text, re.M)
    assert re.search(r"^game 'gta5'$", text, re.M)
    assert re.search(r"^description '.+'$", text, re.M)
    assert "'server.lua'" in text
    for name in ("config.lua", "server.lua", "README.md"):
        assert (RESOURCE / name).is_file(), name


def test_custommeta_is_merged_into_metadata_as_the_official_call911_does(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    _env, url = stack(redis_url, sim, procs)
    custom = {"callerPlayerId": "7", "uuid": "0b5e-4c1d", "postal": "999"}
    h = Harness(lua, url, [[*JANE, None, custom]])
    harnesses.append(h)
    text, ok = answer(h.finish()[1])
    assert ok is True and ADDED.match(text), h.output
    assert len(sim.calls()) == 1
    # A custom key wins over the postal argument, as in the official resource.
    assert untagged(sim.calls()[0]["call"])["metaData"] == {
        "postal": "999", "plate": "8ABC123", "callerPlayerId": "7", "uuid": "0b5e-4c1d"}


def test_coords_go_on_the_call_as_the_official_call911_sends_them(
    lua: str, sim: CadSimulator, harnesses: list[Harness],
) -> None:
    # The resource speaks the CAD's own v1 shape, so pointed at the CAD (here the
    # simulator) directly, what the CAD receives is exactly what the resource built.
    # (Through our door, coords needs the lossless door of issue 13 item 1.)
    coords = {"x": 215.5, "y": -810.25, "z": 30.75}
    h = Harness(lua, sim.url, [[*JANE, coords], [*JANE[:3], None, None, {"x": 1.5}]],
                sonoran_dispatcher_wait="0")
    harnesses.append(h)
    results = h.finish()
    assert answer(results[1])[1] is True and answer(results[2])[1] is True, h.output
    bodies = [r["body"]["data"][0] for r in sim.received()]
    assert bodies[0]["coords"] == coords
    assert "coords" not in bodies[1], "no y: not a position, left out as the official does"


@pytest.mark.slow
def test_the_queue_survives_a_restart_of_the_resource_in_kvp(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness], tmp_path: Path,
) -> None:
    env, url = stack(redis_url, sim, procs, web=False)
    kvp = {"HARNESS_KVP_FILE": str(tmp_path / "kvp.json")}
    second = ["Second Caller", "Paleto Bay", "Shots fired", "1021", None]
    # The dispatcher is down: both calls wait in the resource, then the server stops
    # (killed: no onResourceStop, the worst case).
    before = Harness(lua, url, [JANE, second], kvp, sonoran_dispatcher_wait="0")
    harnesses.append(before)
    before.wait_line(r"not accepted \(dispatcher unreachable")
    before.kill()
    stored = json.loads((tmp_path / "kvp.json").read_text())
    kept = json.loads(stored["queue"])
    assert [c["call"]["caller"] for c in kept] == ["Jane Doe", "Second Caller"]

    start_web(procs, env)
    after = Harness(lua, url, [], {**kvp, "HARNESS_AWAIT_DRAIN": "1"},
                    sonoran_dispatcher_wait="0")
    harnesses.append(after)
    after.finish()
    assert "2 call(s) restored" in after.output
    assert after.posts() == 2
    # Oldest first, with the keys made before the restart.
    accepted = [line for line in after.lines if " accepted as " in line]
    assert [c["key"] in line for c, line in zip(kept, accepted, strict=True)] == [True, True]
    wait_for(lambda: len(sim.calls()) == 2, 30, message="the restored calls in the CAD")
    time.sleep(1.0)
    assert sorted(c["call"]["caller"] for c in sim.calls()) == ["Jane Doe", "Second Caller"]
    assert sim.stats()["duplicates"] == 0
    assert json.loads(json.loads((tmp_path / "kvp.json").read_text())["queue"]) == []


def test_removecall_takes_a_call_back_through_the_remove_911_door(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    _env, url = stack(redis_url, sim, procs)
    h = Harness(lua, url, [JANE])
    harnesses.append(h)
    text, ok = answer(h.finish()[1])
    added = ADDED.match(text)
    assert ok and added and len(sim.calls()) == 1
    cad_id = added["id"]

    unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    r = Harness(lua, url, [], {"HARNESS_REMOVE": json.dumps([cad_id, unknown])})
    harnesses.append(r)
    r.finish()
    removed = {d["id"]: d for d in (json.loads(line[8:]) for line in r.lines
                                     if line.startswith("REMOVED "))}
    assert removed[cad_id] == {"id": cad_id, "ok": True,
                               "text": f"EMERGENCY CALL REMOVAL QUEUED ID: {cad_id}"}
    assert removed[unknown]["ok"] is False
    assert removed[unknown]["text"].startswith("CALL NOT FOUND"), removed
    wait_for(lambda: not sim.calls()[0]["active"], 30, message="the call removed in the CAD")
