"""Rows "open redirect after login", "login brute force" and "logout does not end the
session", against a real web process (two of them sharing the port for the throttle)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis
import requests

from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env
from tests.http.httpkit import start_web
from tests.ops.conftest import OPS_TOKEN

pytestmark = pytest.mark.integration

GUESSES = 2000
THREADS = 8


def _web(redis_url: str, sim: CadSimulator, procs: Callable[..., Proc], **extra: str) -> str:
    return start_web(procs, base_env(redis_url, sim, DISPATCHER_OPS_TOKEN=OPS_TOKEN,
                                     **extra)).url


def _login(url: str, body: str, session: requests.Session | None = None) -> requests.Response:
    """POST /login with a raw form body (so %09 and friends travel exactly as typed)."""
    http = session or requests
    return http.post(url + "/login", data=body, timeout=10, allow_redirects=False,
                     headers={"Origin": url,
                              "Content-Type": "application/x-www-form-urlencoded"})


@pytest.mark.parametrize("target", [
    "/%09/evil.example/", "/%0d%0a/evil.example/", "%0d%0aLocation:%20//evil.example/",
    "//evil.example/", "/%5Cevil.example/", "/\\evil.example/", "https://evil.example/",
    "javascript:alert(1)", "/%20/evil.example/", "/%E2%80%AE/evil", "/%00/x", "evil.example",
])
def test_login_redirects_only_to_a_path_of_this_site(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc], target: str
) -> None:
    url = _web(redis_url, sim, procs)
    answer = _login(url, f"token={OPS_TOKEN}&next={target}")
    assert answer.status_code == 303, (answer.status_code, answer.text[:200])
    assert answer.headers["Location"] == "/"
    form = requests.get(url + "/login?next=" + target, timeout=10)
    assert form.status_code == 200
    assert 'name="next" value="/"' in form.text
    kept = _login(url, f"token={OPS_TOKEN}&next=/%3Freason%3Drejected")
    assert kept.headers["Location"] == "/?reason=rejected", "a real path is kept"


def test_failed_logins_are_throttled_across_web_processes(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    url = _web(redis_url, sim, procs, WEB_CONCURRENCY="2")
    statuses: Counter[int] = Counter()
    retry_after: set[str] = set()
    lock = threading.Lock()

    def guess(n: int) -> None:
        http = requests.Session()
        for i in range(n):
            answer = _login(url, f"token=wrong-guess-{i:06d}", http)
            with lock:
                statuses[answer.status_code] += 1
                if answer.status_code == 429:
                    retry_after.add(answer.headers.get("Retry-After", ""))

    started = time.monotonic()
    threads = [threading.Thread(target=guess, args=(GUESSES // THREADS,))
               for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    checked = statuses[401]
    print(f"\n{GUESSES} wrong tokens, {THREADS} threads, 2 web processes, {took:.1f} s: "
          f"{dict(statuses)}; {checked} checked = {checked / took:.2f} guesses/s")
    assert set(statuses) <= {401, 429}, statuses
    assert statuses[429] >= GUESSES - 20, statuses
    assert checked <= 5 + THREADS, "a few in flight may pass the check at the lock-out"
    assert retry_after and all(v.isdigit() and int(v) > 0 for v in retry_after), retry_after
    # Locked out: even the right token is not checked now.
    locked = _login(url, f"token={OPS_TOKEN}")
    assert locked.status_code == 429 and "Set-Cookie" not in locked.headers
    assert "Too many failed logins" in locked.text
    client = redis.Redis.from_url(redis_url)
    keys = client.keys("dispatcher:throttle:login:*")
    assert keys and all(client.ttl(k) > 0 for k in keys), "every throttle key expires"
    client.close()


def test_logout_ends_the_session_on_the_server(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    url = _web(redis_url, sim, procs)
    http = requests.Session()
    assert _login(url, f"token={OPS_TOKEN}", http).status_code == 303
    cookie = http.cookies.get("dispatcher_ops")
    assert cookie
    page = http.get(url + "/", timeout=10, allow_redirects=False)
    assert page.status_code == 200
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    out = http.post(url + "/logout", data={"csrf": csrf}, headers={"Origin": url},
                    allow_redirects=False, timeout=10)
    assert out.status_code == 303
    # The old cookie, kept by someone who copied it: the login page, not the page.
    old = requests.get(url + "/", cookies={"dispatcher_ops": cookie}, timeout=10,
                       allow_redirects=False)
    assert old.status_code == 303 and old.headers["Location"].startswith("/login"), old.text
    replay = requests.post(url + "/dead-letters/replay", data={"csrf": csrf},
                           cookies={"dispatcher_ops": cookie}, headers={"Origin": url},
                           allow_redirects=False, timeout=10)
    assert replay.status_code == 403
