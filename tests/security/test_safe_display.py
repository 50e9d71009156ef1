"""Table rows "terminal control characters reach operators" and "spoofing characters".

Callers' text is stored exactly as sent; every CLI text output shows control, bidi and
invisible characters as visible escapes (a real web and bridge process, real CLI runs).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from dispatcher.records import Records
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, run_cli, wait_for
from tests.http.httpkit import queued_ids, seed_body, seed_call, start_web

pytestmark = pytest.mark.integration

INBOX = "dispatcher:inbox"
#: What a terminal obeys: ESC, BEL, CR, DEL and the C1 controls (CSI is U+009B).
RAW = ("\x1b", "\x07", "\r", "\x7f", "\x85", "\x9b")
SPOOF = "\u202eevil\u0085\u009b\u200bx\u2066a\u2067b\u2068c\u2069"


def _clean(text: str) -> None:
    for ch in RAW + ("\u202e", "\u200b", "\u2066", "\u2067", "\u2068", "\u2069"):
        assert ch not in text, f"raw {ch!r} printed: {text!r}"


def test_an_inbox_entry_with_terminal_escapes_is_shown_escaped_by_dlq_show_and_list(
        redis_url: str, rclient: redis.Redis, procs: Callable[..., Proc]) -> None:
    env = base_env(redis_url)
    procs(["bridge"], env)
    hostile = '{"caller":"\x1b]0;pwned\x07\x1b[2J","location":"b","description":"c"}'
    rclient.lpush(INBOX, hostile)
    dead_id = wait_for(lambda: rclient.zrange("dispatcher:dead", 0, -1), 30,
                       message="a dead letter")[0].decode()
    assert rclient.hget(f"dispatcher:call:{dead_id}", "raw").decode() == hostile  # as sent

    show = run_cli(["dlq", "show", dead_id], env)
    listing = run_cli(["dlq", "list"], env)
    as_json = run_cli(["dlq", "show", dead_id, "--json"], env)

    assert show.returncode == 0, show.stderr
    _clean(show.stdout + show.stderr + listing.stdout + as_json.stdout)
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in show.stdout
    assert json.loads(as_json.stdout)["raw"] == hostile  # JSON: the same text, escaped


def test_a_caller_with_cr_via_http_is_shown_escaped_by_status(
        redis_url: str, rclient: redis.Redis, sim: CadSimulator,
        procs: Callable[..., Proc]) -> None:
    env = base_env(redis_url, sim)
    web = start_web(procs, env)
    caller = "Jane Doe\r  attempts: 0 (delivered)"
    answer = web.v1(seed_body([seed_call(caller=caller)]))
    assert answer.status_code == 200, answer.text
    call_id = queued_ids(answer)[0]
    assert Records(rclient).get(call_id).call["caller"] == caller  # stored as sent

    status = run_cli(["status", call_id], env)

    assert status.returncode == 0, status.stderr
    _clean(status.stdout)
    assert "Jane Doe\\x0d  attempts" in status.stdout


def test_spoofing_characters_are_accepted_stored_as_sent_and_shown_escaped(
        redis_url: str, rclient: redis.Redis, sim: CadSimulator,
        procs: Callable[..., Proc]) -> None:
    env = base_env(redis_url, sim)
    web = start_web(procs, env)
    answer = web.v1(seed_body([seed_call(caller=SPOOF, location=SPOOF)]))
    assert answer.status_code == 200, answer.text
    call_id = queued_ids(answer)[0]
    stored = Records(rclient).get(call_id)
    assert stored.call["caller"] == SPOOF and stored.call["location"] == SPOOF

    status = run_cli(["status", call_id], env)
    as_json = run_cli(["status", call_id, "--json"], env)

    _clean(status.stdout)
    assert ("\\u202eevil\\x85\\x9b\\u200bx\\u2066a\\u2067b\\u2068c\\u2069"
            in status.stdout), status.stdout
    assert as_json.stdout.isascii()
    assert json.loads(as_json.stdout)["call"]["caller"] == SPOOF


def test_an_error_naming_what_the_user_typed_is_escaped(redis_url: str) -> None:
    env = base_env(redis_url)
    hostile = "\u202e\x1b[2J\rnope"
    replay = run_cli(["dlq", "replay", hostile], env)
    purge = run_cli(["dlq", "purge", hostile, "--yes"], env)
    show = run_cli(["dlq", "show", hostile], env)

    assert replay.returncode == purge.returncode == show.returncode == 1
    for done in (replay, purge, show):
        _clean(done.stdout + done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "\\u202e\\x1b[2J\\x0dnope" in replay.stderr
