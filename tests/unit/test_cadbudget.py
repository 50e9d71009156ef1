"""dispatcher.http.cadbudget and lua/passthrough_take.lua (on a real Redis and fakeredis),
and dispatcher.http.ticketswap: the passthrough's budgets and ticket swap on their own."""

from __future__ import annotations

import json

import pytest
import redis

from dispatcher.http.cadbudget import READBACK_PER_MINUTE, CadBudget, endpoint_of
from dispatcher.http.ticketswap import Lookup, Unresolved, swap_body, swap_segments
from dispatcher.settings import Secret, Settings

OURS = "sk-ours-0123456789"
THEIRS = "sk-theirs-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def budgets(client: redis.Redis, clock: Clock, max_rate: float = 1.0) -> CadBudget:
    return CadBudget(client, Settings(api_key=Secret(OURS), max_rate=max_rate), clock)


@pytest.mark.parametrize(("method", "path", "name", "limit"), [
    ("GET", "emergency/servers/1/calls", "v2:GET:get-calls", 5),
    ("PATCH", "emergency/servers/2/unit-locations", "v2:PATCH:unit-locations", 12),
    ("DELETE", "emergency/servers/1/blips/7", "v2:DELETE:blips", 30),
    ("POST", "emergency/servers/1/dispatch-calls/12/notes", "v2:POST:call-note", 60),
    ("GET", "general/version", "v2:GET:general/version", 10),
    ("GET", "emergency/servers/abc/pager-config", "v2:GET:emergency/servers/{}/pager-config",
     10),
    ("DELETE", "general/records/981", "v2:DELETE:general/records/{}", 10),
])
def test_v2_endpoints_and_their_documented_limits(
        method: str, path: str, name: str, limit: int) -> None:
    assert endpoint_of(method, path.split("/"), 2) == (name, limit)


def test_our_key_leaves_the_read_backs_their_share(both_redis: redis.Redis) -> None:
    b = budgets(both_redis, Clock())
    segments = ["emergency", "servers", "1", "calls"]
    assert b.budget("GET", segments, 2, OURS).allowance == 5 - READBACK_PER_MINUTE == 2
    assert b.budget("GET", segments, 2, THEIRS).allowance == 5
    assert b.budget("PATCH", ["emergency", "servers", "1", "unit-locations"], 2,
                    OURS).allowance == 12


def test_the_window_slides_and_says_how_long_to_wait(both_redis: redis.Redis) -> None:
    clock = Clock()
    b = budgets(both_redis, clock)
    get_calls = b.budget("GET", ["emergency", "servers", "1", "calls"], 2, OURS)
    assert [b.take(get_calls, OURS) for _ in range(2)] == [0.0, 0.0]
    clock.now += 15
    assert b.take(get_calls, OURS) == pytest.approx(45.0)
    assert b.take(get_calls, THEIRS) == 0.0, "another key, another window"
    clock.now += 45.01
    assert b.take(get_calls, OURS) == 0.0
    assert not any(OURS.encode() in k for k in both_redis.keys("*")), "never the key itself"


def test_v1_with_our_key_takes_only_a_free_slot_of_the_rate_limiter(
        both_redis: redis.Redis) -> None:
    clock = Clock()
    b = budgets(both_redis, clock)
    v1 = b.budget("POST", ["general", "get_version"], 1, OURS)
    both_redis.hset("dispatcher:rate", "tat", repr(clock.now + 5))  # a call waits 5 s
    assert b.take(v1, OURS) == pytest.approx(5.0)
    theirs = b.budget("POST", ["general", "get_version"], 1, THEIRS)
    assert b.take(theirs, THEIRS) == 0.0, "another key does not share our limiter"
    clock.now += 5
    assert b.take(v1, OURS) == 0.0
    assert float(both_redis.hget("dispatcher:rate", "tat") or 0) > clock.now, "slot taken"
    assert b.take(v1, OURS) > 0, "the next one waits its turn"
    both_redis.hset("dispatcher:rate", mapping={"tat": "0", "pause_until": repr(clock.now + 9)})
    assert b.take(v1, OURS) == pytest.approx(9.0), "a 429 pause holds passthrough too"
    unlimited = budgets(both_redis, clock, max_rate=0)
    v1 = unlimited.budget("POST", ["general", "get_version"], 1, OURS)
    assert unlimited.take(v1, OURS) == pytest.approx(9.0), "the pause, even without a limit"
    both_redis.hset("dispatcher:rate", mapping={"tat": repr(clock.now + 50), "pause_until": "0"})
    assert unlimited.take(v1, OURS) == 0.0, "no limit: no slot to wait for or take"
    assert float(both_redis.hget("dispatcher:rate", "tat") or 0) == clock.now + 50


# -- tickets ------------------------------------------------------------------------------

T = 9_000_000_000_000_005


def lookup(known: dict[str, tuple[str | None, str | None]]) -> Lookup:
    return lambda ticket: known.get(ticket, (None, None))


def test_tickets_in_segments_and_bodies_become_the_cads_ids() -> None:
    found = lookup({str(T): ("01J", "42")})
    assert swap_segments(["emergency", "servers", "1", "dispatch-calls", str(T)], found)[-1] \
        == "42"
    body = json.dumps({"data": [{"callId": T}, {"callIds": [str(T), 3]}], "callId": str(T)})
    assert json.loads(swap_body(body.encode(), found)) == {
        "data": [{"callId": 42}, {"callIds": ["42", 3]}], "callId": "42"}


def test_a_body_without_a_swap_keeps_its_bytes() -> None:
    found = lookup({})
    for raw in (b'{ "callId" : 17 }', b'not json 9000000000000005',
                b'{"other": 9000000000000005, "x": 1.50}'):
        assert swap_body(raw, found) is raw


@pytest.mark.parametrize(("known", "status"), [({str(T): ("01J", None)}, 409), ({}, 404)])
def test_undelivered_and_unknown_tickets_are_refused(
        known: dict[str, tuple[str | None, str | None]], status: int) -> None:
    with pytest.raises(Unresolved) as refused:
        swap_body(json.dumps({"data": [{"callId": T}]}).encode(), lookup(known))
    assert refused.value.status == status
    with pytest.raises(Unresolved):
        swap_segments(["calls", str(T)], lookup(known))
