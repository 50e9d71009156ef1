"""Pieces of the operations routes without processes: the exposition, the operator
session and its checks, and the page's input parsing (fakeredis, Flask's test tools)."""

from __future__ import annotations

import fakeredis
import pytest
from flask import Flask
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.health import health_report
from dispatcher.http.auth import SESSION_MAX_AGE_S
from dispatcher.http.login import _next_path
from dispatcher.http.opspage import (
    SESSION_COOKIE,
    OperatorAuth,
    View,
    same_origin,
)
from dispatcher.metrics import latency_histogram, registry_for
from dispatcher.settings import Secret, Settings
from dispatcher.telemetry import LATENCY_BUCKETS, Telemetry

NOW = 1_700_000_000.0


def families(client: fakeredis.FakeRedis) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = generate_latest(registry_for(client)).decode()
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


def test_latency_buckets_become_a_cumulative_histogram() -> None:
    client = fakeredis.FakeRedis()
    telemetry = Telemetry(client)
    for seconds in (0.001, 0.02, 0.02, 0.3, 99.0):
        telemetry.observe_latency(seconds, "delivered")
    family = latency_histogram([([], telemetry.latency())], [])
    delivered = {s.labels["le"]: s.value for s in family.samples
                 if s.name.endswith("_bucket") and s.labels["outcome"] == "delivered"}
    assert list(delivered) == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0",
                               "2.5", "5.0", "10.0", "30.0", "+Inf"]
    assert len(delivered) == len(LATENCY_BUCKETS) + 1
    assert delivered["0.005"] == 1 and delivered["0.025"] == 3 and delivered["0.5"] == 4
    assert delivered["30.0"] == 4 and delivered["+Inf"] == 5
    sums = {s.labels["outcome"]: s.value for s in family.samples if s.name.endswith("_sum")}
    assert sums["delivered"] == pytest.approx(99.341)
    assert sums["permanent"] == 0, "every outcome is exposed from the start"


def test_circuit_state_follows_the_enum_convention() -> None:
    client = fakeredis.FakeRedis()
    client.hset("dispatcher:circuit", mapping={"state": "open", "open_until": 4e9})
    states = {labels["state"]: v for _, labels, v in families(client)["dispatcher_circuit_state"]}
    assert states == {"closed": 0, "half_open": 0, "open": 1}
    client.hset("dispatcher:circuit", "open_until", 1)  # cooldown over: the next call probes
    states = {labels["state"]: v for _, labels, v in families(client)["dispatcher_circuit_state"]}
    assert states == {"closed": 0, "half_open": 1, "open": 0}


def test_counters_come_from_the_shared_hash() -> None:
    client = fakeredis.FakeRedis()
    client.hset("dispatcher:counters", mapping={"delivered": 7, "rate_limit_waits": 3,
                                                "rate_limited": 2, "dead:expired": 4})
    f = families(client)
    assert f["dispatcher_calls_delivered"] == [("dispatcher_calls_delivered_total", {}, 7)]
    assert f["dispatcher_rate_limit_waits"][0][2] == 3
    assert f["dispatcher_rate_limit_pauses"][0][2] == 2
    dead = {labels["reason"]: v for _, labels, v in f["dispatcher_calls_dead_lettered"]}
    assert dead == {"expired": 4, "invalid": 0, "rejected": 0}


def test_operator_auth() -> None:
    auth = OperatorAuth(Secret("s3cret-token"))
    assert auth.enabled and auth.token_ok("s3cret-token")
    assert not auth.token_ok("s3cret-toke") and not auth.token_ok("")
    off = OperatorAuth(None)
    assert not off.enabled and not off.token_ok("")
    app = Flask(__name__)
    cookie = auth.new_session()
    with app.test_request_context("/", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}):
        from flask import request

        csrf = auth.csrf_of(request)
        assert csrf and len(csrf) >= 32
        assert OperatorAuth(Secret("other-token")).csrf_of(request) is None, \
            "a new token ends every session"
        assert off.csrf_of(request) is None
    with app.test_request_context("/", headers={"Cookie": f"{SESSION_COOKIE}={cookie}x"}):
        from flask import request

        assert auth.csrf_of(request) is None


def test_a_session_lives_in_redis_and_logout_ends_it() -> None:
    client = fakeredis.FakeRedis()
    auth = OperatorAuth(Secret("s3cret-token-0123"), client, "p")
    cookie = auth.new_session()
    (key,) = client.keys("p:ops:session:*")
    assert 0 < client.ttl(key) <= SESSION_MAX_AGE_S
    app = Flask(__name__)
    with app.test_request_context("/", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}):
        from flask import request

        assert auth.csrf_of(request)
        auth.end_session(request)
        assert client.keys("p:ops:session:*") == []
        assert auth.csrf_of(request) is None, "the signed cookie alone opens nothing"


@pytest.mark.parametrize("headers, ok", [
    ({"Origin": "http://ops.local:8000"}, True),
    ({"Origin": "https://ops.local:8000"}, True),  # TLS ended by a proxy in front of us
    ({"Origin": "http://evil.example"}, False),
    ({"Origin": "null", "Referer": "http://ops.local:8000/"}, False),
    ({"Referer": "http://ops.local:8000/?reason=x"}, True),
    ({"Referer": "http://ops.local:8000.evil.example/"}, False),
    ({}, False),
])
def test_same_origin(headers: dict[str, str], ok: bool) -> None:
    app = Flask(__name__)
    with app.test_request_context("/x", method="POST", base_url="http://ops.local:8000",
                                  headers=headers):
        from flask import request

        assert same_origin(request) is ok


@pytest.mark.parametrize("target, expected", [
    ("/?reason=rejected", "/?reason=rejected"), ("//evil.example/", "/"),
    ("https://evil.example/", "/"), ("/\\evil.example", "/"), ("", "/"),
    ("/\t/evil.example/", "/"), ("/\r\n/evil.example/", "/"), ("\r\nLocation: x", "/"),
    ("/ /evil.example", "/"), ("/\u00a0/evil", "/"), ("/\u202e/x", "/"), ("/\x00", "/"),
    ("/\u0085/x", "/"), ("javascript:alert(1)", "/"), ("/a:b", "/a:b"),
])
def test_login_redirects_only_within_the_site(target: str, expected: str) -> None:
    app = Flask(__name__)
    with app.test_request_context("/login", query_string={"next": target}):
        assert _next_path() == expected


def test_the_page_filter_reads_since_and_says_when_it_cannot() -> None:
    bad = View.from_args({"since": "yesterday", "reason": "rejected"}, NOW)
    assert bad.error and bad.narrowed
    good = View.from_args({"since": "1h", "search": " Jane "}, NOW)
    assert good.error is None and good.flt.since == NOW - 3600 and good.flt.search == "Jane"


def test_settings_read_the_ops_token_and_never_print_it() -> None:
    settings = Settings.from_env({"DISPATCHER_OPS_TOKEN": "tok-0123456789abcdef"})
    assert settings.ops_token is not None and settings.ops_token.reveal() == "tok-0123456789abcdef"
    assert "tok-0123456789abcdef" not in repr(settings)
    assert "tok-0123456789abcdef" not in str(settings.redacted())
    assert Settings.from_env({"DISPATCHER_OPS_TOKEN": " "}).ops_token is None


def test_health_report_names_what_needs_attention() -> None:
    stats = {"circuit": "open", "dead": 2, "queued": 1, "scheduled": 0, "in_flight": 0,
             "delivered": 5, "oldest_age_s": 12.5, "rate_limit_pause_s": 0.0}
    report = health_report(stats, [], (95, 100))
    assert report["status"] == "ok" and report["redis"] is True
    assert report["workers"] == {"alive": 0, "list": []}
    assert report["redis_memory"] == {"used_bytes": 95, "max_bytes": 100}
    problems = " | ".join(report["problems"])
    for words in ("no worker", "circuit is open", "2 dead letter", "95% of maxmemory"):
        assert words in problems, problems
    calm = health_report({**stats, "circuit": "closed", "dead": 0}, [], (10, 0))
    assert calm["problems"] == ["no worker is alive (no heartbeat in the last 3 intervals)"]
