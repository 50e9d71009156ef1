"""Row "the key, escaped, is stored and shown": an inbox entry or an HTTP call that carries
the API key in any form we can decode (plain, JSON ``\\u`` escapes, URL encoding) is
refused, and an entry's raw text is not kept: a note that it was withheld and the
entry's SHA-256 are, in Redis, ``dlq show``, ``dlq list --json`` and the page lookup.
Real bridge and web processes, real Redis."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest
import redis

from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, Proc, base_env, run_cli, wait_for
from tests.http.httpkit import call_keys, seed_body, seed_call, start_web
from tests.unit.conftest import redis_dump

pytestmark = pytest.mark.integration

#: The key with one character JSON-escaped (``S`` is U+0053), as in the issue.
ESCAPED = API_KEY.replace("SECRET", "\\u0053ECRET")
#: Every character escaped, upper-case hex.
ALL_ESCAPED = "".join(f"\\u{ord(ch):04X}" for ch in API_KEY)
#: The key with one character URL-encoded.
PERCENT = API_KEY.replace("SECRET", "%53ECRET")
#: Every byte URL-encoded, lower-case hex.
ALL_PERCENT = "".join(f"%{b:02x}" for b in API_KEY.encode())
FORMS = [API_KEY, ESCAPED, ALL_ESCAPED, PERCENT, ALL_PERCENT, ESCAPED.replace("\\", "\\\\")]

#: Inbox entries as a producer would LPUSH them (raw JSON text, escapes as written).
FLAT = '{"caller":"a","location":"b","description":"@"}'
META = '{"caller":"a","location":"b","description":"c","metaData":{"n":"@"}}'
ENTRIES = {
    "escaped description": FLAT.replace("@", "k " + ESCAPED),
    "escaped in metaData": META.replace("@", ESCAPED),
    "escaped metaData name": META.replace('"n":"@"', f'"{ALL_ESCAPED}":"x"'),
    "url-encoded": FLAT.replace("@", "see " + PERCENT),
    "not JSON, escaped": FLAT.replace("@", ESCAPED)[:-1],
    "unknown field named by the key": FLAT.replace('"caller"', f'"{ESCAPED}":1,"caller"'),
}


def _dump(client: redis.Redis) -> bytes:
    """Every key and value in the database, as one blob."""
    return b"\n".join(redis_dump(client))


def _leaks(text: str | bytes) -> list[str]:
    blob = text.decode(errors="replace") if isinstance(text, bytes) else text
    return [form for form in FORMS if form in blob]


def test_inbox_entries_with_the_key_in_any_form_are_withheld_and_hashed(
    redis_url: str, rclient: redis.Redis, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    env = base_env(redis_url, sim)
    bridge = procs(["bridge"], env)
    web = start_web(procs, env)
    for text in ENTRIES.values():
        rclient.lpush("dispatcher:inbox", text)

    def dead() -> list[dict]:
        done = run_cli(["dlq", "list", "--json"], env)
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))

    letters = wait_for(lambda: len(dead()) == len(ENTRIES) and dead(), 30,
                       message=f"dead letters\n{bridge.output()}")
    hashes = {hashlib.sha256(text.encode()).hexdigest(): name for name, text in ENTRIES.items()}
    seen = set()
    for letter in letters:
        assert letter["reason"] == "invalid"
        raw = letter["raw"]
        assert raw.startswith("raw text withheld: it contained the API key"), raw
        digest = raw.rsplit(" ", 1)[1].rstrip(")")
        assert digest in hashes, raw
        seen.add(hashes[digest])
        shown = run_cli(["dlq", "show", letter["id"]], env)
        assert shown.returncode == 0 and "raw text withheld" in shown.stdout, shown
        assert digest in shown.stdout
        shown_json = run_cli(["dlq", "show", letter["id"], "--json"], env)
        assert json.loads(shown_json.stdout)["raw"] == raw
        page = web_get(web.url, f"/?call={letter['id']}")
        assert "raw text withheld" in page, page[-2000:]
        for output in (shown.stdout, shown_json.stdout, page):
            assert _leaks(output) == [], output
    assert seen == set(ENTRIES)
    assert call_keys(rclient) == {letter["id"] for letter in letters}  # no call was queued
    assert _leaks(_dump(rclient)) == []
    assert _leaks(bridge.output()) == []


def web_get(base: str, path: str) -> str:
    import requests

    answer = requests.get(base + path, timeout=10)
    assert answer.status_code == 200, answer.text[:500]
    return answer.text


@pytest.mark.parametrize("form", ["url-encoded", "escaped twice", "all url-encoded"])
def test_http_doors_refuse_the_key_in_any_decodable_form(
    form: str, redis_url: str, rclient: redis.Redis, sim: CadSimulator,
    procs: Callable[..., Proc],
) -> None:
    web = start_web(procs, base_env(redis_url, sim))
    # JSON text of the call: the key URL-encoded (one character or all, lower-case hex) or
    # escaped twice (a literal "\u0053" in the decoded value).
    if form == "url-encoded":
        call_text = FLAT.replace("@", PERCENT)
    elif form == "escaped twice":
        call_text = FLAT.replace("@", ESCAPED.replace("\\", "\\\\"))
    else:
        call_text = META.replace("@", ALL_PERCENT)
    v1 = seed_body([seed_call(0)]).decode().replace(
        json.dumps(seed_call(0), separators=(",", ":")), call_text)
    assert call_text in v1
    answer = web.v1(v1)
    assert answer.status_code == 400, answer.text
    assert "API key" in answer.text and _leaks(answer.text) == []
    answer = web.v2(call_text)
    assert answer.status_code == 400, answer.text
    assert "API key" in answer.text and _leaks(answer.text) == []
    assert call_keys(rclient) == set()
    assert _leaks(_dump(rclient)) == []
    assert _leaks(web.proc.output()) == []


@pytest.mark.parametrize("form", ["escaped", "url-encoded", "all url-encoded"])
def test_python_producers_refuse_the_key_in_any_decodable_form(
    redis_url: str, rclient: redis.Redis, form: str
) -> None:
    """enqueue_call and `dispatcher enqueue` refuse what the doors refuse; nothing stored."""
    from dispatcher import InvalidCall, Producer
    from dispatcher.call import Call
    from dispatcher.settings import Secret, Settings

    text = {"escaped": ESCAPED, "url-encoded": PERCENT, "all url-encoded": ALL_PERCENT}[form]
    settings = Settings(redis_url=redis_url, community_id="c", api_key=Secret(API_KEY))
    producer = Producer(settings)
    call = Call.parse({"caller": "a", "location": "b", "description": f"see {text}"})
    with pytest.raises(InvalidCall, match="API key"):
        producer.enqueue(call)
    done = run_cli(["enqueue", "--caller", "a", "--location", "b", "--description", "c",
                    "--meta", f"note={text}"], base_env(redis_url))
    assert done.returncode != 0 and "API key" in done.stderr, done
    assert not _leaks(done.stdout + done.stderr)
    assert not _leaks(_dump(rclient))
    assert rclient.dbsize() == 0 or not rclient.keys("dispatcher:call:*")
