"""Row "a Redis password in the URL's query": every process works with an ACL user, given
as userinfo or in the query (``?username=&password=``), and unusable URL forms are
refused at start in one line. Real redis-server with ``ACL SETUSER`` and ``default`` off;
web, worker, scheduler, bridge and CLI against it; calls reach the CAD simulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
import redis

from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, run_cli, wait_for
from tests.http.httpkit import seed_body, seed_call, start_web
from tests.security.servers import ACL_PASSWORD, ACL_USER, Server, acl_server

pytestmark = pytest.mark.integration

USER, PASSWORD = quote(ACL_USER, safe=""), quote(ACL_PASSWORD, safe="")


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[Server]:
    server = acl_server()
    yield server
    server.stop()


def _admin(server: Server) -> redis.Redis:
    return redis.Redis(port=server.port, db=2, username=ACL_USER, password=ACL_PASSWORD)


@pytest.fixture
def flushed(acl_redis: Server) -> Iterator[Server]:
    _admin(acl_redis).flushall()
    yield acl_redis
    _admin(acl_redis).flushall()


FORMS = {
    "userinfo": "redis://{user}:{password}@127.0.0.1:{port}/2",
    "query": "redis://127.0.0.1:{port}/2?username={user}&password={password}",
    "unix socket": "unix://{user}:{password}@{socket}?db=2",
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_an_acl_user_works_in_every_process(
    form: str, flushed: Server, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    url = FORMS[form].format(user=USER, password=PASSWORD, port=flushed.port,
                             socket=flushed.socket)
    env = base_env(url, sim)
    worker = procs(["worker", "--concurrency", "2"], env)
    procs(["scheduler"], env)
    bridge = procs(["bridge"], env)
    web = start_web(procs, env)

    answer = web.v1(seed_body([seed_call(1, caller="via http")]))
    assert answer.status_code == 200, answer.text
    enqueued = run_cli(["enqueue", "--caller", "via cli", "--location", "L",
                        "--description", "D"], env)
    assert enqueued.returncode == 0, enqueued.stderr
    _admin(flushed).lpush("dispatcher:inbox", json.dumps({"caller": "via inbox", "location": "L",
                                      "description": "D"}))

    def callers() -> set[str]:
        return {c["call"]["caller"] for c in sim.calls()}

    wait_for(lambda: callers() == {"via http", "via cli", "via inbox"}, 60,
             message=f"three deliveries\n{worker.output()}\n{bridge.output()}")
    stats = run_cli(["stats", "--json"], env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["delivered"] == 3
    for proc in (worker, bridge, web.proc):
        assert proc.alive(), proc.output()
        out = proc.output()
        assert ACL_PASSWORD not in out and PASSWORD not in out, out
        assert "Traceback" not in out, out


def test_a_wrong_password_is_refused_in_one_line_by_every_process(
    flushed: Server, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    wrong = "pw-WRONG-0123456789"
    env = base_env(f"redis://127.0.0.1:{flushed.port}/0?username={USER}&password={wrong}", sim)
    for command in (["stats"], ["dlq", "list"], ["scheduler"], ["bridge"], ["web"]):
        done = run_cli(command, env, timeout=60)
        assert done.returncode != 0, (command, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert "Traceback" not in done.stderr, (command, done.stderr)
        assert lines[-1].startswith("dispatcher: error:"), (command, done.stderr)
        assert "credentials" in lines[-1], (command, done.stderr)
        assert wrong not in done.stderr + done.stdout, (command, done.stderr)
    worker = procs(["worker"], env)
    wait_for(lambda: not worker.alive(), 60, message=f"the worker to refuse\n{worker.output()}")
    out = worker.output()
    assert worker.proc.returncode != 0
    assert "dispatcher: error: Redis refused the credentials" in out, out
    assert wrong not in out, out


@pytest.mark.parametrize("url, why", [
    ("redis://127.0.0.1:6379/0?socket_timeout=abc", "socket_timeout"),
    ("redis://127.0.0.1:6379/0?retry_on_error=x", "retry_on_error"),
    ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "ssl_cert_reqs"),
    ("rediss://127.0.0.1:6379/0?ssl_cert_reqs=none", "ssl_cert_reqs"),
    ("redis://127.0.0.1:notaport/0?password=pw-Q-0123456789", "not a valid Redis URL"),
])
@pytest.mark.parametrize("command", [["stats"], ["worker"], ["web"]])
def test_an_unusable_url_form_is_refused_at_start_in_one_line(
    url: str, why: str, command: list[str]
) -> None:
    done = run_cli(command, base_env(url), timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("dispatcher: error: REDIS_URL"), done.stderr
    assert why in done.stderr
    assert "pw-Q" not in done.stderr
