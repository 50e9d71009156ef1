"""The operations page of a real web process over HTTP: login, CSRF, escaping, replay,
purge, filters, lookup and the read-only mode. (The browser test clicks through it.)"""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, Proc, base_env, free_port, wait_for
from tests.ops.conftest import (
    OPS_TOKEN,
    Operator,
    Web,
    dead_letters,
    start_web,
    stats,
    status,
)

pytestmark = pytest.mark.integration

class _Row(HTMLParser):
    """The text of each cell of the dead-letter row of one call."""

    def __init__(self, call_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.call_id = call_id
        self.inside = False
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.inside = ("data-id", self.call_id) in attrs
        elif tag == "td" and self.inside:
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside and self.cells:
            self.cells[-1] += data


def cells(page: str, call_id: str) -> list[str]:
    parser = _Row(call_id)
    parser.feed(page)
    assert parser.cells, f"no row for {call_id}"
    return [c.strip() for c in parser.cells]


HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>\"'&"


@pytest.fixture
def stack(ops_env: dict[str, str], procs: Callable[..., Proc]) -> Web:
    procs(["worker"], ops_env)
    procs(["scheduler"], ops_env)
    return start_web(procs, ops_env)


def test_the_page_needs_the_operator_token(stack: Web) -> None:
    first = stack.get("/?reason=rejected")
    assert first.status_code == 303
    target = urlsplit(first.headers["Location"])
    assert target.path == "/login" and parse_qs(target.query)["next"] == ["/?reason=rejected"]
    form = stack.get("/login")
    assert form.status_code == 200 and 'type="password"' in form.text

    origin = {"Origin": stack.url}
    wrong = requests.post(stack.url + "/login", data={"token": "guess"}, headers=origin,
                          allow_redirects=False, timeout=10)
    assert wrong.status_code == 401 and "Set-Cookie" not in wrong.headers
    cross = requests.post(stack.url + "/login", data={"token": OPS_TOKEN},
                          headers={"Origin": "http://evil.example"}, allow_redirects=False,
                          timeout=10)
    assert cross.status_code == 403 and "Set-Cookie" not in cross.headers

    op = Operator(stack)
    cookie = op.login_response.headers["Set-Cookie"]
    assert cookie.startswith("dispatcher_ops=")
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie, cookie
    assert OPS_TOKEN not in cookie
    page = op.http.get(stack.url + "/", timeout=10)
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert OPS_TOKEN not in page.text and API_KEY not in page.text
    assert "<script" not in page.text.lower(), "the page needs no script at all"

    # An open redirect is not offered after login.
    evil = requests.post(stack.url + "/login", data={"token": OPS_TOKEN,
                                                     "next": "//evil.example/"},
                         headers=origin, allow_redirects=False, timeout=10)
    assert evil.headers["Location"] == "/"
    # A forged cookie is no session.
    forged = requests.get(stack.url + "/", cookies={"dispatcher_ops": cookie.split(";")[0]
                                                    .split("=", 1)[1][:-2] + "xx"},
                          allow_redirects=False, timeout=10)
    assert forged.status_code == 303


def test_actions_refuse_requests_without_csrf_token_or_from_another_origin(
    stack: Web, ops_env: dict[str, str], sim: CadSimulator
) -> None:
    (call_id,) = dead_letters(ops_env, sim, ["Jane Doe"])
    op = Operator(stack)
    csrf = op.csrf()
    replay = f"/dead-letters/{call_id}/replay"
    assert op.post(replay, {}).status_code == 403
    assert op.post(replay, {"csrf": "x" * len(csrf)}).status_code == 403
    assert op.post(replay, {"csrf": csrf}, headers={"Origin": "http://evil.example"}
                   ).status_code == 403
    assert op.post(replay, {"csrf": csrf}, headers={}).status_code == 403, "no Origin/Referer"
    assert op.post(replay, {"csrf": csrf}, headers={"Origin": "null"}).status_code == 403
    anonymous = requests.post(stack.url + replay, data={"csrf": csrf},
                              headers={"Origin": stack.url}, allow_redirects=False, timeout=10)
    assert anonymous.status_code == 403, "the CSRF token alone is not a session"
    assert stack.get(replay).status_code == 405, "no state change by GET"
    assert op.post(f"/dead-letters/{call_id}/purge", {}).status_code == 403
    assert op.post("/dead-letters/replay", {"reason": "rejected"}).status_code == 403
    assert op.post("/logout", {}).status_code == 403
    assert stats(ops_env)["dead"] == 1, "nothing changed"

    # With the token and our own Referer (no Origin) the same replay goes through.
    ok = op.post(replay, {"csrf": csrf, "back": "reason=rejected"},
                 headers={"Referer": stack.url + "/"})
    assert ok.status_code == 303
    assert parse_qs(urlsplit(ok.headers["Location"]).query) == {
        "reason": ["rejected"], "done": ["replayed"], "n": ["1"]}
    wait_for(lambda: len(sim.calls()) == 1, 60, message="the replayed call delivered")
    assert status(ops_env, call_id)["status"] == "delivered"

    out = op.post("/logout", {"csrf": csrf})
    assert out.status_code == 303
    assert op.http.get(stack.url + "/", allow_redirects=False, timeout=10).status_code == 303


def test_user_input_is_escaped_and_lookup_shows_the_status(
    stack: Web, ops_env: dict[str, str], sim: CadSimulator
) -> None:
    (call_id,) = dead_letters(ops_env, sim, [HOSTILE])
    op = Operator(stack)
    page = op.page()
    assert HOSTILE not in page
    assert "<img" not in page and "<script" not in page, "user input became markup"
    assert cells(page, call_id)[4] == HOSTILE, "the caller is shown verbatim, as text"

    found = op.page(f"call={call_id}")
    section = found[found.index('id="lookup-result"'):]
    assert re.search(r'id="lookup-status">dead<', section)
    assert "rejected" in section and "INVALID API KEY" in section
    missing = op.page("call=%3Cb%3Enope")
    assert "&lt;b&gt;nope" in missing and "<b>nope" not in missing


def test_filters_replay_all_matching_and_purge(
    stack: Web, ops_env: dict[str, str], sim: CadSimulator
) -> None:
    ids = dead_letters(ops_env, sim, ["Alpha Caller", "Bravo Caller", "Alpha Again"])
    op = Operator(stack)
    page = op.page("search=alpha")
    assert re.search(r'id="matching">2 matching', page)
    assert ids[1] not in page and ids[0] in page and ids[2] in page
    bad = op.page("since=yesterday-ish")
    assert "is not a time" in bad and 'id="replay-all"' not in bad

    done = op.post("/dead-letters/replay", {"csrf": op.csrf(), "search": "alpha",
                                            "back": "search=alpha"})
    assert done.status_code == 303
    assert "n=2" in done.headers["Location"]
    wait_for(lambda: len(sim.calls()) == 2, 60, message="both matching calls delivered")
    assert {c["call"]["caller"] for c in sim.calls()} == {"Alpha Caller", "Alpha Again"}
    assert stats(ops_env)["dead"] == 1

    notice = op.page("done=replayed&n=2")
    assert "Replayed 2 dead letter(s)" in notice
    purge = op.post(f"/dead-letters/{ids[1]}/purge", {"csrf": op.csrf()})
    assert purge.status_code == 303 and "done=purged" in purge.headers["Location"]
    assert stats(ops_env)["dead"] == 0
    assert status(ops_env, ids[0])["replays"] == 1
    again = op.post(f"/dead-letters/{ids[1]}/purge", {"csrf": op.csrf()})
    assert "done=missing" in again.headers["Location"]


def test_without_a_token_the_page_is_read_only(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    env = base_env(redis_url, sim, PORT=str(free_port()))
    procs(["worker"], env)
    web = start_web(procs, env)
    (call_id,) = dead_letters(env, sim, ["Read Only"])
    page = web.get("/")
    assert page.status_code == 200
    assert 'id="read-only"' in page.text and "DISPATCHER_OPS_TOKEN" in page.text
    assert call_id in page.text
    assert "/dead-letters/" not in page.text and 'name="csrf"' not in page.text
    assert web.get("/login").status_code == 303
    refused = requests.post(web.url + f"/dead-letters/{call_id}/replay", data={"csrf": ""},
                            headers={"Origin": web.url}, allow_redirects=False, timeout=10)
    assert refused.status_code == 403
    assert stats(env)["dead"] == 1
    assert web.get("/metrics").status_code == 200 and web.get("/healthz").status_code == 200
