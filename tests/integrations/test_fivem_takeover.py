"""Takeover mode, run by plain Lua 5.4 against a real dispatcher: the callcommands
plugin's /911 and /311, its SendCallApi event, the cadIncomingCall and EmergencyCallAdd
events it raises, and the follow that gives EmergencyCallAdd the CAD's id for a call the
door only queued.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, COMMUNITY, Proc, base_env, free_port, wait_for
from tests.integrations.fivem_support import (
    Harness,
    events,
    stack,
    start_web,
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




def test_a_queued_takeover_call_is_followed_until_emergencycalladd_has_the_cads_id(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    # The web process only: the door queues the call and, nobody delivering it, answers
    # QUEUED with our ticket after its 1 s wait. The plugin would raise EmergencyCallAdd
    # with the CAD's id; the resource asks again with the call's key until it has it.
    env = base_env(redis_url, sim, PORT=str(free_port()))
    start_web(procs, env)
    h = Harness(lua, f"http://127.0.0.1:{env['PORT']}", [], {
        "HARNESS_COMMANDS": json.dumps([[7, "911", ["car", "on", "fire"]]]),
        "HARNESS_AWAIT_EVENT": API + "EmergencyCallAdd", "HARNESS_AWAIT_COUNT": "1",
    }, sonoran_dispatcher_takeover="true", sonoran_dispatcher_wait="1",
        sonoran_dispatcher_follow="2,2,2,2,2,2,2,2,2,2")
    harnesses.append(h)
    queued = h.wait_line(rf"accepted as {TICKET}$")
    ticket = queued.rsplit(" ", 1)[1]
    wait_for(lambda: h.posts() >= 2, 10, message="the first ask (2 s later): still queued")
    assert events(h, API + "EmergencyCallAdd") == [], "no CAD id yet"

    procs(["worker"], env)
    procs(["scheduler"], env)
    h.finish()

    assert len(sim.calls()) == 1, "the asks are repeats of one call, never new calls"
    cad_id = sim.calls()[0]["cad_id"]
    assert events(h, API + "EmergencyCallAdd") == [[7, cad_id]]
    assert f"call {ticket} is in the CAD as {cad_id}" in h.output
    assert h.posts() >= 3, "the create, at least one ask answered QUEUED, the ADDED one"
    time.sleep(1.0)
    assert len(sim.calls()) == 1 and sim.stats()["duplicates"] == 0


def test_the_follow_gives_up_after_its_schedule_and_the_call_stays_queued(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    env = base_env(redis_url, sim, PORT=str(free_port()))
    start_web(procs, env)
    h = Harness(lua, f"http://127.0.0.1:{env['PORT']}", [], {
        "HARNESS_COMMANDS": json.dumps([[7, "911", ["shots", "fired"]]]),
        "HARNESS_AWAIT_IDLE": "1",
    }, sonoran_dispatcher_takeover="true", sonoran_dispatcher_wait="1",
        sonoran_dispatcher_follow="1,1")
    harnesses.append(h)
    h.finish()

    ticket = h.wait_line(rf"accepted as {TICKET}$").rsplit(" ", 1)[1]
    stopped = [line for line in h.lines if "stopped following" in line]
    assert stopped == [f"[sonoran_dispatcher] stopped following call {ticket} after 2 s: the CAD "
                       "has not taken it yet; it stays queued with the dispatcher "
                       f"(dispatcher status {ticket})"], h.output
    assert h.posts() == 3, "the create and one ask per step of the schedule"
    assert events(h, API + "EmergencyCallAdd") == []

    # The asks recorded nothing new: once a worker runs, the CAD gets the call once.
    procs(["worker"], env)
    procs(["scheduler"], env)
    wait_for(lambda: len(sim.calls()) == 1, 30, message="the call in the CAD")
    time.sleep(1.0)
    assert len(sim.calls()) == 1
    assert untagged(sim.calls()[0]["call"])["description"] == "shots fired"


def test_a_follow_schedule_beyond_six_hours_falls_back_to_the_default(
    lua: str, redis_url: str, sim: CadSimulator, procs: Callable[..., Proc],
    harnesses: list[Harness],
) -> None:
    # The door keeps a key for a day; an ask after that would be a new call, so the
    # schedule's total is capped (6 h) and a longer one is refused with a warning.
    env = base_env(redis_url, sim, PORT=str(free_port()))
    start_web(procs, env)
    h = Harness(lua, f"http://127.0.0.1:{env['PORT']}", [], {
        "HARNESS_COMMANDS": json.dumps([[7, "911", ["help"]]]),
        "HARNESS_AWAIT_IDLE": "1",
    }, sonoran_dispatcher_takeover="true", sonoran_dispatcher_wait="1",
        sonoran_dispatcher_follow=",".join(["3600"] * 7))
    harnesses.append(h)
    h.wait_line(r'sonoran_dispatcher_follow "3600,.*" is not a list of positive seconds '
                r'adding up to at most 21600; using "5,15,45,120,300,300,300,300,300"')
    h.kill()
    assert h.posts() == 1, "the first ask comes 5 s later, by the default schedule"


def test_the_follow_stops_at_once_when_the_cad_refused_the_call(
    lua: str, redis_url: str, procs: Callable[..., Proc], harnesses: list[Harness],
) -> None:
    # The CAD knows another key than the dispatcher: the call is queued, then refused by
    # the CAD for good (a dead letter). The door answers the next ask with the CAD's own
    # 400, and asking again cannot change that, so the follow stops there, once.
    cad = CadSimulator(community_id=COMMUNITY, api_key="sk-the-CADs-own-key-0123456789").start()
    try:
        env = base_env(redis_url, cad, PORT=str(free_port()))
        start_web(procs, env)
        h = Harness(lua, f"http://127.0.0.1:{env['PORT']}", [], {
            "HARNESS_COMMANDS": json.dumps([[7, "911", ["car", "on", "fire"]]]),
            "HARNESS_AWAIT_IDLE": "1",
        }, sonoran_dispatcher_takeover="true", sonoran_dispatcher_wait="1",
            sonoran_dispatcher_follow="2,2,2,2,2,2,2,2,2,2")
        harnesses.append(h)
        ticket = h.wait_line(rf"accepted as {TICKET}$").rsplit(" ", 1)[1]
        procs(["worker"], env)
        procs(["scheduler"], env)
        h.finish()
    finally:
        cad.stop()

    stopped = [line for line in h.lines if "stopped following" in line]
    assert stopped == [f"[sonoran_dispatcher] ^1stopped following call {ticket}: "
                       "INVALID API KEY^7"], h.output
    assert events(h, API + "EmergencyCallAdd") == []
    assert h.posts() < 11, "it stopped before the schedule ran out"
    assert API_KEY not in h.output
