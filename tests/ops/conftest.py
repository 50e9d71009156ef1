"""Shared helpers of the operations tests: a real web process and an operator's browser
session over plain HTTP (requests), plus dead letters made the real way."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests
from prometheus_client import CONTENT_TYPE_LATEST

from dispatcher.records import Records
from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, Proc, base_env, free_port, run_cli, wait_for

#: The operator token of the web processes these tests start.
OPS_TOKEN = "ops-TEST-token-9c41d7e2b8a5"


class Web:
    """A started ``dispatcher web`` and its base URL."""

    def __init__(self, proc: Proc, env: dict[str, str]) -> None:
        self.proc = proc
        self.env = env
        self.url = f"http://127.0.0.1:{env['PORT']}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, allow_redirects=False, **kw)

    def metrics_text(self) -> str:
        resp = self.get("/metrics")
        assert resp.status_code == 200, resp.text
        # Exactly prometheus-client's header: one charset (strict scrapers refuse two).
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST, resp.headers
        return resp.text

    def health(self) -> dict[str, Any]:
        resp = self.get("/healthz")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())


def start_web(procs: Callable[..., Proc], env: dict[str, str]) -> Web:
    web = Web(procs(["web"], env), env)

    def up() -> bool:
        try:
            return web.get("/healthz").status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, 60, message=f"the web process\n{web.proc.output()}")
    return web


@pytest.fixture
def ops_env(redis_url: str, sim: CadSimulator) -> dict[str, str]:
    """Environment of every process, the web's operator token included."""
    return base_env(redis_url, sim, PORT=str(free_port()), DISPATCHER_OPS_TOKEN=OPS_TOKEN)


class Operator:
    """A logged-in operator (a requests session that keeps the cookie)."""

    def __init__(self, web: Web, token: str = OPS_TOKEN) -> None:
        self.web = web
        self.http = requests.Session()
        self.origin = {"Origin": web.url}
        resp = self.http.post(web.url + "/login", data={"token": token, "next": "/"},
                              headers=self.origin, allow_redirects=False, timeout=10)
        assert resp.status_code == 303, resp.text
        self.login_response = resp

    def page(self, query: str = "") -> str:
        resp = self.http.get(self.web.url + "/" + (f"?{query}" if query else ""), timeout=10,
                             allow_redirects=False)
        assert resp.status_code == 200, (resp.status_code, resp.text[:500])
        return resp.text

    def csrf(self) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.page())
        assert match, "the page carries no CSRF token"
        return match.group(1)

    def post(self, path: str, data: dict[str, str], headers: dict[str, str] | None = None
             ) -> requests.Response:
        return self.http.post(self.web.url + path, data=data,
                              headers=self.origin if headers is None else headers,
                              allow_redirects=False, timeout=30)


def stats(env: dict[str, str]) -> dict[str, Any]:
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        return Records(client).stats()
    finally:
        client.close()


def enqueue(env: dict[str, str], caller: str, location: str = "Route 68 / Joshua Rd",
            description: str = "Two-car collision") -> str:
    result = run_cli(["enqueue", "--caller", caller, "--location", location,
                      "--description", description], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def dead_letters(env: dict[str, str], sim: CadSimulator, callers: list[str]) -> list[str]:
    """Calls dead-lettered for real: the CAD has a new key, ours is the old one. The
    simulator gets our key back afterwards (the operator 'fixed the configuration')."""
    sim.set_credentials(api_key="rotated-key-the-dispatcher-does-not-know")
    before = stats(env)["dead"]
    ids = [enqueue(env, caller) for caller in callers]
    wait_for(lambda: stats(env)["dead"] == before + len(ids), 60, message="dead letters")
    sim.set_credentials(api_key=API_KEY)
    return ids


def status(env: dict[str, str], call_id: str) -> dict[str, Any]:
    result = run_cli(["status", call_id, "--json"], env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


class Clock:
    """A clock the heartbeat and history tests move by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()

