"""Two communities in one deployment (DISPATCHER_COMMUNITIES): real worker, scheduler,
bridge and web processes, a real Redis, and one CAD simulator per community.

One community's CAD is down the whole time; the other's calls are delivered through
every door (HTTP v1 by the body's id/key, v2 by the Bearer key, the Python API, the
inbox, the CLI), each to its own CAD with its own credentials, and the waiting calls
stay visible per community.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests

from dispatcher.communities import RELOAD_CHECK_S, load
from dispatcher.producer import Producer
from dispatcher.settings import Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, free_port, run_cli, wait_for

pytestmark = pytest.mark.integration

NORTH_KEY = "north-key-7a1c9e3b5d"
SOUTH_KEY = "south-key-2f8d4a6c0e"


@pytest.fixture
def cads() -> Iterator[tuple[CadSimulator, CadSimulator]]:
    north = CadSimulator(community_id="north-42", api_key=NORTH_KEY).start()
    south = CadSimulator(community_id="south-7", api_key=SOUTH_KEY).start()
    yield north, south
    north.stop()
    south.stop()


@pytest.fixture
def env(redis_url: str, cads: tuple[CadSimulator, CadSimulator], tmp_path: Path
        ) -> dict[str, str]:
    north, south = cads
    path = tmp_path / "communities.toml"
    path.write_text(f"""
[communities.north]
id = "north-42"
key_env = "NORTH_KEY"
api_url = "{north.url}"
max_rate = 0
default = true

[communities.south]
id = "south-7"
key = "{SOUTH_KEY}"
api_version = 2
api_url = "{south.url}"
server_id = "1"
max_rate = 0
""")
    e = base_env(redis_url, PORT=str(free_port()), DISPATCHER_COMMUNITIES=str(path),
                 NORTH_KEY=NORTH_KEY, DISPATCHER_CIRCUIT_COOLDOWN_S="1")
    for name in ("SONORAN_COMMUNITY_ID", "SONORAN_API_KEY"):
        e.pop(name)
    return e


def _stats(env: dict[str, str]) -> dict[str, object]:
    out = run_cli(["stats", "--json"], env)
    assert out.returncode == 0, out.stderr
    parsed: dict[str, object] = json.loads(out.stdout)
    return parsed


def test_one_communitys_cad_down_never_holds_the_others_calls(
    env: dict[str, str], cads: tuple[CadSimulator, CadSimulator],
    procs: Callable[..., Proc], redis_url: str,
) -> None:
    north, south = cads
    south.set_fault("error", status=503)  # south's CAD is down throughout
    for name in ("worker", "scheduler", "bridge", "web"):
        procs([name], env)
    url = f"http://127.0.0.1:{env['PORT']}"
    wait_for(lambda: _up(url), 30, message="the web process")

    # Some south calls first: they wait, retrying, behind a down CAD.
    for i in range(3):
        answer = requests.post(f"{url}/v2/emergency/servers/1/calls/911", timeout=10,
                               headers={"Authorization": f"Bearer {SOUTH_KEY}"},
                               json={"isEmergency": True, "caller": f"South {i}",
                                     "location": "L", "description": "D"})
        assert answer.status_code == 200, answer.text

    # North's calls through every door.
    seed = {"id": "north-42", "key": NORTH_KEY, "type": "CALL_911",
            "data": [{"serverId": "1", "isEmergency": True, "caller": "North http",
                      "location": "L", "description": "D"}]}
    assert requests.post(f"{url}/emergency/call_911", json=seed, timeout=10).status_code == 200
    settings = Settings.from_env(env)
    producer = Producer(settings)
    producer_id = _python_enqueue(producer, "North api", None)
    client = redis.Redis.from_url(redis_url)
    client.lpush("dispatcher:inbox", json.dumps({"caller": "North inbox", "location": "L",
                                                 "description": "D", "community": "north"}))
    cli = run_cli(["enqueue", "--caller", "North cli", "--location", "L", "--description",
                   "D", "--community", "north"], env)
    assert cli.returncode == 0, cli.stderr

    wait_for(lambda: len(north.calls()) == 4, 30, message="north's four calls")
    got = sorted(c["call"]["caller"] for c in north.calls())
    assert got == ["North api", "North cli", "North http", "North inbox"]
    assert south.calls() == []

    stats = _stats(env)
    each = stats["communities"]
    assert isinstance(each, dict)
    assert each["north"]["delivered"] == 4 and each["north"]["circuit"] == "closed"
    assert each["south"]["delivered"] == 0
    assert each["south"]["queued"] + each["south"]["scheduled"] + each["south"]["in_flight"] == 3
    assert stats["delivered"] == 4  # summed
    # The page's probes see the workers; /metrics labels every series by community.
    health = requests.get(f"{url}/healthz", timeout=5).json()
    assert health["workers"]["alive"] == 1
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'dispatcher_calls_delivered_total{community="north"} 4.0' in metrics
    assert 'dispatcher_calls_delivered_total{community="south"} 0.0' in metrics
    assert 'dispatcher_circuit_state{community="north",state="closed"} 1.0' in metrics
    # The page: the default community, and any other by the filter.
    assert '<b id="delivered">4</b>' in requests.get(f"{url}/", timeout=5).text
    south_page = requests.get(f"{url}/?community=south", timeout=5).text
    assert '<b id="delivered">0</b>' in south_page
    assert '<b aria-current="page">south</b>' in south_page
    status = run_cli(["status", producer_id, "--json"], env)
    assert json.loads(status.stdout)["status"] == "delivered"

    # South's CAD comes back: its calls go to it, with its own key, and to no one else.
    south.clear_faults()
    wait_for(lambda: len(south.calls()) == 3, 60, message="south's three calls")
    assert sorted(c["call"]["caller"] for c in south.calls()) == ["South 0", "South 1",
                                                                 "South 2"]
    assert len(north.calls()) == 4
    assert south.stats()["duplicates"] == 0 and north.stats()["duplicates"] == 0


def test_wrong_pairs_are_refused_with_the_seeds_texts(
    env: dict[str, str], procs: Callable[..., Proc],
) -> None:
    procs(["web"], env)
    url = f"http://127.0.0.1:{env['PORT']}"
    wait_for(lambda: _up(url), 30, message="the web process")

    def v1(community: str, key: str) -> str:
        body = {"id": community, "key": key, "type": "CALL_911",
                "data": [{"caller": "A", "location": "B", "description": "C"}]}
        return requests.post(f"{url}/emergency/call_911", json=body, timeout=10).text

    assert v1("nowhere", NORTH_KEY) == "INVALID COMMUNITY ID"
    assert v1("north-42", SOUTH_KEY) == "INVALID API KEY"  # another community's key
    assert v1("south-7", SOUTH_KEY).startswith("EMERGENCY CALL QUEUED ID: ")
    cli = run_cli(["enqueue", "--caller", "A", "--location", "B", "--description", "C",
                   "--community", "east"], env)
    assert cli.returncode == 2 and "unknown community 'east'" in cli.stderr
    assert cli.stderr.count("\n") == 1


def test_an_unknown_community_from_the_inbox_is_kept_as_an_invalid_dead_letter(
    env: dict[str, str], procs: Callable[..., Proc], redis_url: str,
) -> None:
    procs(["bridge"], env)
    client = redis.Redis.from_url(redis_url)
    client.lpush("dispatcher:inbox", json.dumps({"caller": "A", "location": "B",
                                                 "description": "C", "community": "east"}))
    wait_for(lambda: client.llen("dispatcher:inbox") == 0, 30, message="the bridge")
    north = load(Settings.from_env(env)).get("north")
    dead = run_cli(["dlq", "list", "--json"], env)
    letters = json.loads(dead.stdout)
    assert [d["reason"] for d in letters] == ["invalid"], dead.stdout
    assert letters[0]["community"] == "north"  # the default community's dead letters
    assert "unknown community 'east'" in json.dumps(letters[0])
    assert north.prefix == "dispatcher@north"


def _python_enqueue(producer: Producer, caller: str, community: str | None) -> str:
    from dispatcher import enqueue_call

    return enqueue_call(caller=caller, location="L", description="D", producer=producer,
                        community=community)


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_reload_adds_a_community_and_rotates_a_key_without_a_restart(
    env: dict[str, str], cads: tuple[CadSimulator, CadSimulator],
    procs: Callable[..., Proc], tmp_path: Path,
) -> None:
    north, south = cads
    path = Path(env["DISPATCHER_COMMUNITIES"])
    both = path.read_text()
    path.write_text(both.split("[communities.south]")[0])  # north only, at first
    for name in ("worker", "scheduler", "web"):
        procs([name], env)
    url = f"http://127.0.0.1:{env['PORT']}"
    wait_for(lambda: _up(url), 30, message="the web process")

    def v1(community: str, key: str, caller: str) -> requests.Response:
        body = {"id": community, "key": key, "type": "CALL_911",
                "data": [{"caller": caller, "location": "L", "description": "D"}]}
        return requests.post(f"{url}/emergency/call_911", json=body, timeout=10)

    assert v1("south-7", SOUTH_KEY, "Too early").text == "INVALID COMMUNITY ID"
    assert v1("north-42", NORTH_KEY, "North before").status_code == 200

    # South is added; north's key rotates: the door takes the old key for a while.
    wait_for(lambda: len(north.calls()) == 1, 30, message="north's first call")
    new_north = "north-key-NEW-4c2e8a"
    north.set_credentials(api_key=new_north)  # the CAD now knows only the new key
    path.write_text(both.replace('key_env = "NORTH_KEY"',
                                 f'key = "{new_north}"\nprevious_key_env = "NORTH_KEY"\n'
                                 'previous_key_until = 2099-01-01T00:00:00Z'))
    done = run_cli(["reload", "--json"], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["communities"] == ["north", "south"]
    assert NORTH_KEY not in done.stdout + done.stderr and new_north not in done.stdout

    wait_for(lambda: v1("south-7", SOUTH_KEY, "South after").status_code == 200, 15,
             message="the door to know south")
    # Each process reads the file within RELOAD_CHECK_S of its next piece of work; a send
    # in that second would still go with the old key, which this CAD no longer takes.
    time.sleep(RELOAD_CHECK_S + 0.5)
    assert v1("north-42", NORTH_KEY, "North old key").status_code == 200
    assert v1("north-42", new_north, "North new key").status_code == 200
    wait_for(lambda: len(south.calls()) == 1, 30, message="south's call")
    wait_for(lambda: len(north.calls()) == 3, 30, message="north's three calls")
    # Every north call after the reload went with the new key (the CAD refuses the old).
    assert sorted(c["call"]["caller"] for c in north.calls()) == [
        "North before", "North new key", "North old key"]
    # The page and /metrics know south too, without a restart.
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'dispatcher_calls_delivered_total{community="south"} 1.0' in metrics
    assert '<a href="/?community=south">south</a>' in requests.get(f"{url}/", timeout=5).text


def test_reload_refuses_a_wrong_file_and_without_one(env: dict[str, str]) -> None:
    path = Path(env["DISPATCHER_COMMUNITIES"])
    path.write_text(path.read_text() + "\n[communities.bad]\nid = 1\n")
    wrong = run_cli(["reload"], env)
    assert wrong.returncode == 2 and "[communities.bad]: id must be non-empty text" in wrong.stderr
    none = run_cli(["reload"], {k: v for k, v in env.items() if k != "DISPATCHER_COMMUNITIES"})
    assert none.returncode == 2 and "DISPATCHER_COMMUNITIES is not set" in none.stderr


def test_a_removed_communitys_calls_wait_visible_and_go_once_it_is_back(
    env: dict[str, str], cads: tuple[CadSimulator, CadSimulator],
    procs: Callable[..., Proc],
) -> None:
    north, south = cads
    env = {**env, "DISPATCHER_ORPHAN_AFTER_S": "5"}  # a message dropped meanwhile comes back
    path = Path(env["DISPATCHER_COMMUNITIES"])
    both = path.read_text()
    south.set_fault("refuse")  # south's calls wait, their messages out or in line
    worker = procs(["worker"], env)
    procs(["scheduler"], env)
    producer = Producer(Settings.from_env(env))
    try:
        ids = [_python_enqueue(producer, f"South {i}", "south") for i in range(3)]
    finally:
        producer.close()
    wait_for(lambda: _stats(env)["communities"]["south"]["retried"] > 0, 30,  # type: ignore[index]
             message="south's first (refused) attempt")

    path.write_text(both.split("[communities.south]")[0])  # south removed
    assert run_cli(["reload"], env).returncode == 0
    time.sleep(RELOAD_CHECK_S + 1)
    south.clear_faults()
    time.sleep(3)
    assert south.calls() == [], "a removed community's calls are not sent"
    stats = _stats(env)
    gone = stats["removed_communities"]
    assert isinstance(gone, dict) and list(gone) == ["south"]
    assert sum(gone["south"][k] for k in ("queued", "scheduled", "in_flight")) == 3
    human = run_cli(["stats"], env).stdout
    assert "community south is no longer in DISPATCHER_COMMUNITIES: 3 calls wait" in human

    path.write_text(both)  # back: every call goes, once
    assert run_cli(["reload"], env).returncode == 0
    wait_for(lambda: len(south.calls()) == 3, 120, message="south's calls after its return")
    time.sleep(1)
    assert sorted(c["call"]["caller"] for c in south.calls()) == ["South 0", "South 1",
                                                                  "South 2"]
    assert "removed_communities" not in _stats(env)
    assert "Traceback" not in worker.output(), "a message of a removed community is one line"
    assert len(ids) == 3
