"""Every script of dispatcher/lua/ on its own, with the keys and args its header names,
against the real Redis and fakeredis's Lua alike."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest
import redis

from dispatcher import scripts

P = "t"
NOW = 1_700_000_000.0
LUA = resources.files("dispatcher").joinpath("lua")
SCRIPTS = sorted(f.name for f in LUA.iterdir()
                 if f.name.endswith(".lua") and not f.name.startswith("_"))


@pytest.fixture
def client(both_redis: redis.Redis) -> redis.Redis:
    return both_redis


def run(client: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    return scripts.register(client, name)(keys=keys, args=args)


def text(value: Any) -> Any:
    if isinstance(value, list):
        return [text(v) for v in value]
    return value.decode() if isinstance(value, bytes) else value


def call_hash(client: redis.Redis, call_id: str) -> dict[str, str]:
    raw: Any = client.hgetall(f"{P}:call:{call_id}")
    return {k.decode(): v.decode() for k, v in raw.items()}


def put(client: redis.Redis, call_id: str, state: str, place: str | None, score: float = NOW,
        **fields: Any) -> None:
    """A call record in ``state``, in zset ``place`` (and pending, by enqueue time)."""
    base = {"id": call_id, "state": state, "gen": 1, "enqueued_at": NOW - 10,
            "age_from": NOW - 10, "call": '{"caller": "A"}', "failures": 0, "attempts": 0}
    base.update(fields)
    client.hset(f"{P}:call:{call_id}", mapping=base)
    client.zadd(f"{P}:pending", {call_id: float(base["enqueued_at"])})
    if place:
        client.zadd(f"{P}:{place}", {call_id: score})


def where(client: redis.Redis, call_id: str) -> list[str]:
    return [z for z in ("held", "queued", "scheduled", "inflight", "verifying", "dead")
            if client.zscore(f"{P}:{z}", call_id) is not None]


# -- The headers ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCRIPTS)
def test_header_names_every_key_and_arg_and_the_body_names_them(name: str) -> None:
    lines = LUA.joinpath(name).read_text().splitlines()
    header = [ln for ln in lines if ln.startswith("--") and not ln.startswith("--!")]
    body = [ln for ln in scripts.source(name).splitlines() if not ln.lstrip().startswith("--")]
    used = set(re.findall(r"(KEYS|ARGV)\[(\d+)\]", "\n".join(body)))
    documented = set(re.findall(r"(KEYS|ARGV)\[(\d+)\]", "\n".join(header)))
    assert used <= documented, f"{name}: undocumented {sorted(used - documented)}"
    bare = [ln for ln in body if re.search(r"(KEYS|ARGV)\[", ln) and not ln.startswith("local ")]
    assert bare == [], f"{name}: KEYS/ARGV outside the named locals"


def test_includes_expand_once_and_in_order() -> None:
    source = scripts.source("retry.lua")
    assert "--!include" not in source
    assert source.count("local function k(name)") == 1
    assert source.index("local function hold(") < source.index("local function circuit_success(")
    assert source.index("local function circuit_blocks(") < source.index("local function capacity(")


# -- lifecycle -----------------------------------------------------------------------------

def enqueue(client: redis.Redis, call_id: str, idem: str = "", inbox: str = "",
            entry: str = "", queue: str = "q", cap: int = 0, window: int = 10,
            notify: str = "", unknown: int = 0, civil: str = "") -> list[Any]:
    return text(run(client, "enqueue.lua", [P, inbox, queue],
                    [call_id, '{"caller": "A"}', repr(NOW), idem, 60, "api", "0.0", "3.0",
                     window, entry, f"msg-{call_id}", cap, notify, unknown, civil]))


def test_emergency_calls_wait_ahead_of_civil_ones_oldest_first_within_each(
        client: redis.Redis) -> None:
    for call_id, civil in (("c1", "1"), ("e1", ""), ("c2", "1"), ("e2", "")):
        assert enqueue(client, call_id, window=0, civil=civil)[1] == "held"
    assert text(client.zrange(f"{P}:held", 0, -1)) == ["e1", "e2", "c1", "c2"]
    assert call_hash(client, "c1")["civil"] == "1" and "civil" not in call_hash(client, "e1")
    # Released oldest emergency first: the line's order is the order of release.
    out = text(run(client, "release.lua", [P], [repr(NOW), 10, "0.0", "3.0", 10]))
    assert out[1::2] == ["e1", "e2", "c1", "c2"]


def test_tickets_count_above_9e15_and_name_the_call_as_long_as_its_record(
        client: redis.Redis) -> None:
    assert enqueue(client, "a")[2] == "9000000000000001"
    assert enqueue(client, "b", unknown=3)[2] == "9000000000000002"
    assert call_hash(client, "b")["ticket"] == "9000000000000002"
    assert text(client.get(f"{P}:ticket:9000000000000002")) == "b"
    assert client.ttl(f"{P}:ticket:9000000000000002") == -1, "kept while the call waits"
    assert text(client.hget(f"{P}:counters", "unknown_fields")) == "3"
    # Near the end of the doubles' exact range the text is still exact (not 9e+15).
    client.set(f"{P}:tickets", 2**53 - 3)
    assert enqueue(client, "c")[2] == str(2**53 - 2)
    # Delivered: the ticket's index expires with the record.
    client.hset(f"{P}:call:b", mapping={"state": "sending", "gen": 1})
    run(client, "delivered.lua", [P], ["b", repr(NOW), "7", 200, "EMERGENCY CALL ADDED ID: 7",
                                        600, "", "0"])
    assert call_hash(client, "b")["state"] == "delivered"
    assert 0 < client.ttl(f"{P}:ticket:9000000000000002") <= 600
    assert client.ttl(f"{P}:call:b") == client.ttl(f"{P}:ticket:9000000000000002")
    # A dead letter purged for good takes its ticket's index with it.
    client.hset(f"{P}:call:a", "state", "dead")
    assert run(client, "purge.lua", [P], ["a"]) == 1
    assert not client.exists(f"{P}:ticket:9000000000000001")


def test_enqueue_records_pushes_dedups_and_caps(client: redis.Redis) -> None:
    assert enqueue(client, "a", idem="k") == ["a", "pushed", "9000000000000001"]
    assert text(client.lrange("q", 0, -1)) == ["msg-a"]
    assert call_hash(client, "a")["state"] == "queued"
    assert client.ttl(f"{P}:idem:k") == 60
    assert enqueue(client, "b", idem="k") == ["a", "duplicate", "9000000000000001"]
    assert enqueue(client, "c") == ["c", "pushed", "9000000000000002"]
    assert enqueue(client, "d", window=2) == ["d", "held", "9000000000000003"], \
        "the window of messages is full"
    assert where(client, "d") == ["held"]
    assert enqueue(client, "e", cap=3) == ["", "full", "3"]
    assert not client.exists(f"{P}:call:e")


def test_enqueue_takes_the_entry_from_the_inbox_or_records_nothing(client: redis.Redis) -> None:
    client.lpush("in:processing", "raw")
    assert enqueue(client, "a", inbox="in:processing", entry="raw")[1] == "pushed"
    assert client.llen("in:processing") == 0
    assert enqueue(client, "b", inbox="in:processing", entry="raw") == ["", "gone"]
    assert not client.exists(f"{P}:call:b")


def claim(client: redis.Redis, call_id: str, gen: int = 1, max_age: float = 0,
          interval: float = 0.0) -> list[Any]:
    return text(run(client, "claim.lua", [P],
                    [call_id, str(gen), repr(NOW), "30", repr(max_age), "30", repr(interval),
                     "3.0", repr(interval), "1.0"]))


def test_claim_takes_a_queued_call_of_its_generation(client: redis.Redis) -> None:
    put(client, "a", "queued", "queued", slot=NOW)
    assert claim(client, "a", gen=2) == ["stale", "queued"]
    assert claim(client, "x") == ["missing"]
    assert claim(client, "a") == ["claimed", '{"caller": "A"}', "0", "0", repr(NOW - 10), "", ""]
    assert where(client, "a") == ["inflight"] and client.zscore(f"{P}:inflight", "a") == NOW + 30


def test_claim_holds_for_breaker_pause_and_rate_and_buries_the_too_old(
        client: redis.Redis) -> None:
    for call_id in "abcd":
        put(client, call_id, "queued", "queued")
    client.hset(f"{P}:circuit", mapping={"state": "open", "open_until": NOW + 5})
    assert claim(client, "a") == ["held", "circuit"]
    client.hset(f"{P}:circuit", "state", "closed")
    client.hset(f"{P}:rate", "pause_until", NOW + 5)
    assert claim(client, "b") == ["held", "paused"]
    client.hdel(f"{P}:rate", "pause_until")
    client.zadd(f"{P}:rate:granted", {"other": NOW})
    client.hset(f"{P}:call:c", "slot", NOW + 10)
    assert claim(client, "c", interval=1.0) == ["held", "rate"]
    assert claim(client, "d", max_age=5) == ["expired"]
    assert call_hash(client, "d")["reason"] == "expired"
    assert [where(client, i) for i in "abcd"] == [["held"]] * 3 + [["dead"]]


def test_claim_admits_one_probe_when_the_cooldown_is_over(client: redis.Redis) -> None:
    put(client, "a", "queued", "queued")
    client.hset(f"{P}:circuit", mapping={"state": "open", "open_until": NOW - 1})
    assert claim(client, "a")[0] == "claimed"
    assert text(client.hmget(f"{P}:circuit", "state", "probe")) == ["half_open", "a"]


def outcome(client: redis.Redis, name: str, args: list[Any]) -> Any:
    return text(run(client, name, [P], args))


def test_delivered_records_observes_and_closes_the_breaker(client: redis.Redis) -> None:
    put(client, "a", "sending", "inflight")
    client.hset(f"{P}:circuit", mapping={"state": "half_open", "failures": 3})
    args = ["a", repr(NOW), "77", 200, "OK", 100, "0.05", "0.04"]
    assert outcome(client, "delivered.lua", args) == "delivered"
    h = call_hash(client, "a")
    assert (h["state"], h["cad_call_id"], h["attempts"]) == ("delivered", "77", "1")
    assert where(client, "a") == [] and 0 < client.ttl(f"{P}:call:a") <= 100
    assert text(client.hget(f"{P}:circuit", "state")) == "closed"
    assert text(client.hget(f"{P}:circuit", "flush")) == "1"
    assert text(client.hget(f"{P}:latency", "delivered:0.05")) == "1"
    assert outcome(client, "delivered.lua", args) == "already"
    assert outcome(client, "delivered.lua", ["x", *args[1:]]) == "missing"


def retry(client: redis.Redis, call_id: str, kind: str = "error", threshold: int = 5) -> Any:
    return outcome(client, "retry.lua", [call_id, "1", repr(NOW), repr(NOW + 7), "boom", 503,
                                         "down", kind, "30", threshold, "10", "60", "", "0"])


def test_retry_schedules_pauses_on_429_and_holds_when_the_breaker_opens(
        client: redis.Redis) -> None:
    for call_id in "abc":
        put(client, call_id, "sending", "inflight")
    assert retry(client, "a") == "scheduled"
    assert client.zscore(f"{P}:scheduled", "a") == NOW + 7
    assert retry(client, "b", kind="ratelimit") == "held"
    assert float(client.hget(f"{P}:rate", "pause_until") or 0) == NOW + 30
    assert call_hash(client, "b")["failures"] == "0", "a 429 costs the call nothing"
    assert retry(client, "c", threshold=1) == "held"
    assert text(client.hget(f"{P}:circuit", "state")) == "open"
    assert retry(client, "c") == "stale"


def test_unclaim_and_dead(client: redis.Redis) -> None:
    put(client, "a", "sending", "inflight")
    put(client, "b", "sending", "inflight")
    client.hset(f"{P}:circuit", "probe", "a")
    assert outcome(client, "unclaim.lua", ["a", "2", repr(NOW)]) == "stale"
    assert outcome(client, "unclaim.lua", ["a", "1", repr(NOW)]) == "held"
    assert where(client, "a") == ["held"] and text(client.hget(f"{P}:circuit", "probe")) == ""
    assert outcome(client, "dead.lua", ["b", "1", repr(NOW), "rejected", 400, "bad", "no",
                                        "0.1", "0.07"]) == "dead"
    h = call_hash(client, "b")
    assert (h["state"], h["reason"], h["status_code"]) == ("dead", "rejected", "400")
    assert where(client, "b") == ["dead"]
    assert text(client.hget(f"{P}:counters", "dead:rejected")) == "1"
    assert text(client.hget(f"{P}:latency", "permanent:count")) == "1"


def published(pubsub: Any) -> list[str]:
    """The ids published on the outcomes channel since the last look (subscribe skipped)."""
    found = []
    while (message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)):
        found.append(text(message["data"]))
    return found


def test_outcomes_are_published_only_for_calls_a_door_waits_on(client: redis.Redis) -> None:
    pubsub = client.pubsub()
    pubsub.subscribe(f"{P}:outcomes")
    published(pubsub)
    enqueue(client, "w", idem="k", notify="1")
    enqueue(client, "n")
    enqueue(client, "dup", idem="k2")
    assert call_hash(client, "w")["notify"] == "1" and "notify" not in call_hash(client, "n")
    assert enqueue(client, "again", idem="k2", notify="1")[:2] == ["dup", "duplicate"]
    assert call_hash(client, "dup")["notify"] == "1", "a waiting retry is told too"
    assert enqueue(client, "gone", idem="k3", notify="1")[1] == "pushed"
    client.delete(f"{P}:call:gone")
    assert enqueue(client, "later", idem="k3", notify="1") == ["gone", "duplicate", ""]
    assert not client.exists(f"{P}:call:gone"), "no stray record for an expired call"
    for call_id in ("w", "n", "dup"):
        client.hset(f"{P}:call:{call_id}", mapping={"state": "sending", "gen": 1})
    assert outcome(client, "delivered.lua", ["w", repr(NOW), "77", 200, "OK", 0, "", "0"]) \
        == "delivered"
    assert outcome(client, "delivered.lua", ["n", repr(NOW), "78", 200, "OK", 0, "", "0"]) \
        == "delivered"
    assert outcome(client, "dead.lua", ["dup", "1", repr(NOW), "rejected", 400, "INVALID API KEY",
                                        "no", "", "0"]) == "dead"
    assert published(pubsub) == ["w", "dup"]
    assert outcome(client, "delivered.lua", ["w", repr(NOW), "77", 200, "OK", 0, "", "0"]) \
        == "already"
    assert published(pubsub) == [], "an outcome is told once"
    pubsub.close()


def test_gate_spaces_sends_and_stops_for_a_pause(client: redis.Redis) -> None:
    key = f"{P}:rate"
    assert text(run(client, "gate.lua", [key], [repr(NOW), "1.0"])) == "go"
    assert float(text(run(client, "gate.lua", [key], [repr(NOW + 0.25), "1.0"]))) == 0.75
    assert text(run(client, "gate.lua", [key], [repr(NOW + 1), "1.0"])) == "go"
    client.hset(key, "pause_until", NOW + 10)
    assert text(run(client, "gate.lua", [key], [repr(NOW + 5), "1.0"])) == "paused"


def test_the_gate_times_sends_by_redis_own_clock_when_given_no_time(
        client: redis.Redis) -> None:
    # Workers on several machines: their sends are spaced by Redis's TIME, not by their
    # own measured offsets.
    key = f"{P}:rate2"
    seconds, micros = client.time()
    assert text(run(client, "gate.lua", [key], ["", "1.0"])) == "go"
    last = float(text(client.hget(key, "last_send")))
    assert abs(last - (seconds + micros / 1e6)) < 1.0
    wait = float(text(run(client, "gate.lua", [key], ["", "1.0"])))
    assert 0.5 < wait <= 1.0


# -- schedule ------------------------------------------------------------------------------

def test_promote_reaps_and_flush_put_calls_back_in_line(client: redis.Redis) -> None:
    put(client, "due", "scheduled", "scheduled", score=NOW - 1)
    put(client, "later", "scheduled", "scheduled", score=NOW + 60)
    put(client, "lost", "sending", "inflight", score=NOW - 1)
    put(client, "orphan", "queued", "queued", score=NOW - 100)
    assert run(client, "promote.lua", [P], [repr(NOW), 10]) == 1
    assert run(client, "reap_leases.lua", [P], [repr(NOW), 10, "2"]) == 1
    assert call_hash(client, "lost")["attempts"] == "1"
    assert where(client, "lost") == ["verifying"], "the CAD may have it: read back first"
    assert float(call_hash(client, "lost")["verify_at"]) == NOW + 2
    client.hset(f"{P}:readback", "unavailable_until", NOW + 60)
    put(client, "lost2", "sending", "inflight", score=NOW - 1)
    assert run(client, "reap_leases.lua", [P], [repr(NOW), 10, "2"]) == 1
    assert where(client, "lost2") == ["held"], "no read-back: sent again, as before"
    assert client.hget(f"{P}:counters", "possible_duplicates") == b"1"
    assert run(client, "reap_orphans.lua", [P], [repr(NOW), repr(NOW - 50), 10]) == 1
    assert run(client, "flush.lua", [P], [repr(NOW), 10]) == 0, "no flag, no flush"
    client.hset(f"{P}:circuit", mapping={"state": "closed", "flush": 1})
    assert run(client, "flush.lua", [P], [repr(NOW), 10]) == 1
    assert not client.hexists(f"{P}:circuit", "flush")
    assert [where(client, i) for i in ("due", "later", "orphan")] == [["held"]] * 3


def test_expire_pages_through_pending(client: redis.Redis) -> None:
    put(client, "old", "held", "held", enqueued_at=NOW - 100, age_from=NOW - 100)
    put(client, "replayed", "held", "held", enqueued_at=NOW - 90, age_from=NOW)
    n, seen, last = text(run(client, "expire.lua", [P], [repr(NOW), "50", 1, ""]))
    assert (n, seen) == (1, 1) and float(last) == NOW - 100
    n, seen, last = text(run(client, "expire.lua", [P], [repr(NOW), "50", 1, last]))
    assert (n, seen) == (0, 1) and float(last) == NOW - 90, "its age counts from the replay"
    assert text(run(client, "expire.lua", [P], [repr(NOW), "50", 1, last])) == [0, 0, ""]
    assert where(client, "old") == ["dead"] and where(client, "replayed") == ["held"]


def test_release_gives_messages_oldest_first_within_capacity(client: redis.Redis) -> None:
    put(client, "b", "held", "held", score=2, idempotency_key="k")
    put(client, "a", "held", "held", score=1)
    out = text(run(client, "release.lua", [P], [repr(NOW), 10, "1.0", "1.0", 10]))
    # First, when the next slot (NOW + 2) comes within the 1 s lookahead: in 1 s.
    assert out == ["1", "a", 2, "b", 2]
    assert float(text(client.hget(f"{P}:call:b", "slot"))) == NOW + 1
    assert where(client, "a") == ["queued"]
    client.hset(f"{P}:circuit", mapping={"state": "open", "open_until": NOW - 1})
    put(client, "c", "held", "held")
    assert text(run(client, "release.lua", [P], [repr(NOW), 10, "0.0", "1.0", 10])) == ["0"], \
        "a probe only when nothing is queued"


# -- dead letters, inbox, history, telemetry -----------------------------------------------

def test_replay_and_purge(client: redis.Redis) -> None:
    put(client, "a", "dead", "dead", reason="rejected")
    put(client, "inv", "dead", "dead", call="{}")
    assert text(run(client, "replay.lua", [P], ["inv", repr(NOW)])) == "unreplayable"
    assert text(run(client, "replay.lua", [P], ["a", repr(NOW)])) == "replayed"
    assert where(client, "a") == ["held"] and call_hash(client, "a")["last_reason"] == "rejected"
    assert text(run(client, "replay.lua", [P], ["a", repr(NOW)])) == "not_dead"
    assert run(client, "purge.lua", [P], ["a"]) == 0
    assert run(client, "purge.lua", [P], ["inv"]) == 1 and not client.exists(f"{P}:call:inv")


def test_bury_invalid_summarises_beyond_the_cap(client: redis.Redis) -> None:
    client.lpush("in:processing", "junk")
    for i, call_id in enumerate(("a", "b", "c")):
        got = text(run(client, "bury_invalid.lua", [P, "in:processing" if i == 0 else ""],
                       [call_id, repr(NOW + i), "junk", "not JSON", "inbox", "junk",
                        f"sha{i}", 2, 5]))
    assert got == ["c", "1", "1"]
    assert client.llen("in:processing") == 0
    assert text(client.lrange(f"{P}:invalid:hashes", 0, -1)) == ["sha0"]
    assert not client.exists(f"{P}:call:a") and call_hash(client, "c")["reason"] == "invalid"
    assert text(run(client, "bury_invalid.lua", [P, "in:processing"],
                    ["d", repr(NOW), "x", "e", "inbox", "gone", "s", 2, 5])) == ""


def test_inbox_take_history_append_and_observe(client: redis.Redis) -> None:
    client.lpush("in", "1", "2", "3")
    assert text(run(client, "inbox_take.lua", ["in", "in:p"], [2])) == ["1", "2"]
    assert text(client.lrange("in:p", 0, -1)) == ["2", "1"]
    key = f"{P}:history"
    assert run(client, "history_append.lua", [key], [json.dumps({"t": NOW}), repr(NOW), 5, 2])
    assert run(client, "history_append.lua", [key], ["{}", repr(NOW + 1), 5, 2]) == 0
    for t in (NOW + 10, NOW + 20):
        run(client, "history_append.lua", [key], [json.dumps({"t": t}), repr(t), 5, 2])
    assert client.llen(key) == 2
    run(client, "observe.lua", [f"{P}:latency"], ["delivered", "0.1", "0.08"])
    assert text(client.hmget(f"{P}:latency", "delivered:0.1", "delivered:count")) == ["1", "1"]


def test_the_throttle_scripts(client: redis.Redis) -> None:
    keys, args = ["f", "l", "s"], [2, 60, 10, 100, 600]
    # Each attempt is counted before its token is compared; the last wrong one locks.
    seen = [(run(client, "login_attempt.lua", keys, args),
             run(client, "login_failure.lua", keys, args)) for _ in "ab"]
    assert seen == [(0, 0), (0, 10)]
    assert client.ttl("l") == 10
    assert run(client, "login_attempt.lua", keys, args) == 10, "locked: no comparison"
    client.delete("l")
    assert [run(client, "login_attempt.lua", keys, args) for _ in "abc"] == [0, 0, 20]
    assert text(run(client, "ingest_bucket.lua", ["b"], ["1.0", "1.0"])) == [1, 0]
    assert text(run(client, "ingest_bucket.lua", ["b"], ["1.0", "1.0"]))[0] == 0
