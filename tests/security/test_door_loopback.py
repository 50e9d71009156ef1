"""Row "the page is open": without DISPATCHER_OPS_TOKEN the operations page answers
loopback clients only (others get 403 and a one-line hint; /metrics, /healthz and ingest
stay open), and X-Forwarded-For counts only with DISPATCHER_TRUSTED_PROXIES."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import requests

from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env
from tests.http.httpkit import V1, seed_body, seed_call, start_web
from tests.security.doorkit import other_local_address

pytestmark = pytest.mark.integration

HINT = "set DISPATCHER_OPS_TOKEN"


def _get(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=10, allow_redirects=False)


def test_without_a_token_the_page_answers_loopback_clients_only(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    lan = other_local_address()
    if lan is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    web = start_web(procs, base_env(redis_url, sim, DISPATCHER_WEB_HOST="0.0.0.0"))
    port = web.url.rsplit(":", 1)[1]
    remote = f"http://{lan}:{port}"
    assert _get(web.url + "/").status_code == 200, "loopback: the read-only page"
    for path in ("/", "/?reason=rejected", "/login", "/ops/static/ops.css"):
        answer = _get(remote + path)
        assert answer.status_code == 403, (path, answer.status_code)
        assert HINT in answer.text and answer.text.count("\n") == 1, answer.text
        assert "Jane" not in answer.text
    # A forged X-Forwarded-For means nothing while no proxy is trusted.
    assert _get(remote + "/", **{"X-Forwarded-For": "127.0.0.1"}).status_code == 403
    assert _get(remote + "/healthz").status_code == 200
    assert _get(remote + "/metrics").status_code == 200
    ingest = requests.post(remote + V1, data=seed_body([seed_call()]), timeout=10)
    assert ingest.status_code == 200, ingest.text
    log = web.proc.output()
    assert re.search(rf"ops: 403 / .* from {re.escape(lan)}", log), log


def test_trusted_proxies_name_the_forwarded_client_everywhere(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    lan = other_local_address()
    web = start_web(procs, base_env(redis_url, sim, DISPATCHER_TRUSTED_PROXIES="1",
                                    DISPATCHER_WEB_HOST="0.0.0.0",
                                    DISPATCHER_INGEST_RATE="1"))
    # Through a local proxy: the forwarded address decides, and it is not loopback.
    far = _get(web.url + "/", **{"X-Forwarded-For": "203.0.113.9"})
    assert far.status_code == 403 and HINT in far.text
    near = _get(web.url + "/", **{"X-Forwarded-For": "127.0.0.1"})
    assert near.status_code == 200, "a local client through a local proxy"
    assert _get(web.url + "/").status_code == 200, "no header: the peer itself"
    if lan is not None:  # a forwarded loopback address from a remote peer is not loopback
        port = web.url.rsplit(":", 1)[1]
        spoof = _get(f"http://{lan}:{port}/", **{"X-Forwarded-For": "127.0.0.1"})
        assert spoof.status_code == 403
    # The ingest rate is kept per forwarded address: one each, then 429.
    for client in ("198.51.100.1", "198.51.100.2"):
        first = web.post(V1, seed_body([seed_call()]), {"X-Forwarded-For": client})
        assert first.status_code == 200, first.text
    again = web.post(V1, seed_body([seed_call()]), {"X-Forwarded-For": "198.51.100.1"})
    assert again.status_code == 429, again.text
    # Log lines name the forwarded client, never the proxy.
    wrong = web.post(V1, seed_body([seed_call()], key="wrong-key"),
                     {"X-Forwarded-For": "198.51.100.77"})
    assert wrong.status_code == 400
    log = web.proc.output()
    assert "ops: 403 / " in log and "from 203.0.113.9" in log, log
    assert re.search(r"http v1: 429 TOO MANY REQUESTS: .* from 198\.51\.100\.1\b", log), log
    assert "INVALID API KEY from 198.51.100.77" in log, log


def test_behind_a_local_proxy_that_is_not_trusted_the_page_is_not_open(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    """A local nginx forwards every remote client from loopback: without a trusted proxy
    and without a token, a request a proxy forwarded does not get the page."""
    web = start_web(procs, base_env(redis_url, sim))
    for header in ({"X-Forwarded-For": "192.0.2.2, 127.0.0.1"},
                   {"Forwarded": "for=192.0.2.2"}, {"X-Real-IP": "192.0.2.2"}):
        proxied = _get(web.url + "/", **header)
        assert proxied.status_code == 403 and HINT in proxied.text, (header, proxied.text)
    assert _get(web.url + "/").status_code == 200, "a local client, no proxy"
    assert _get(web.url + "/healthz", **{"X-Forwarded-For": "192.0.2.2"}).status_code == 200


def test_the_session_cookie_is_secure_behind_a_tls_proxy(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    token = "ops-TEST-token-9c41d7e2b8a5"
    web = start_web(procs, base_env(redis_url, sim, DISPATCHER_OPS_TOKEN=token))
    login = requests.post(web.url + "/login", data={"token": token}, timeout=10,
                          allow_redirects=False,
                          headers={"Origin": web.url, "X-Forwarded-Proto": "https"})
    assert login.status_code == 303, login.text
    assert "secure" in login.headers["Set-Cookie"].lower(), login.headers["Set-Cookie"]
