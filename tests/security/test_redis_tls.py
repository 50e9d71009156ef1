"""Row "rediss:// is not verified by the worker": every process verifies the Redis
server's certificate (the worker's kombu included) against DISPATCHER_REDIS_CA_FILE.
Real ``redis-server --tls-port`` with a CA and a certificate made here (openssl)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, run_cli, wait_for
from tests.http.httpkit import seed_body, seed_call, start_web
from tests.security.servers import Server, make_certs, tls_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_redis(certs: dict[str, Path]) -> Iterator[Server]:
    server = tls_server(certs)
    yield server
    server.stop()


def _client(server: Server, certs: dict[str, Path]) -> redis.Redis:
    return redis.Redis(port=server.port, ssl=True, ssl_ca_certs=str(certs["ca"]),
                       ssl_cert_reqs="required")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_call_goes_through_web_worker_and_simulator_over_verified_tls(
    host: str, tls_redis: Server, certs: dict[str, Path], sim: CadSimulator,
    procs: Callable[..., Proc],
) -> None:
    _client(tls_redis, certs).flushall()
    env = base_env(f"rediss://{host}:{tls_redis.port}/0", sim,
                   DISPATCHER_REDIS_CA_FILE=certs["ca"])
    worker = procs(["worker", "--concurrency", "2"], env)
    procs(["scheduler"], env)
    bridge = procs(["bridge"], env)
    web = start_web(procs, env)

    assert web.v1(seed_body([seed_call(1, caller="over tls")])).status_code == 200
    _client(tls_redis, certs).lpush("dispatcher:inbox", json.dumps(
        {"caller": "inbox over tls", "location": "L", "description": "D"}))
    wait_for(lambda: {c["call"]["caller"] for c in sim.calls()} == {"over tls",
                                                                   "inbox over tls"},
             60, message=f"deliveries over TLS\n{worker.output()}\n{bridge.output()}")
    stats = run_cli(["stats", "--json"], env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["delivered"] == 2
    out = worker.output()
    assert "insecure" not in out.lower(), out
    assert "Traceback" not in out, out


@pytest.mark.parametrize("command", [["stats"], ["dlq", "list"], ["enqueue", "--caller", "C",
                                     "--location", "L", "--description", "D"],
                                     ["scheduler"], ["bridge"], ["web"], ["worker"]])
def test_a_certificate_the_ca_file_does_not_verify_is_refused(
    command: list[str], tls_redis: Server, certs: dict[str, Path], sim: CadSimulator,
) -> None:
    env = base_env(f"rediss://127.0.0.1:{tls_redis.port}/0", sim,
                   DISPATCHER_REDIS_CA_FILE=certs["other-ca"])
    done = run_cli(command, env, timeout=90)
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("dispatcher: error:")]
    assert len(errors) == 1, done.stderr
    assert "certificate" in errors[0] and "verif" in errors[0], done.stderr
    if command[0] != "worker":
        assert done.stderr.strip() == errors[0], done.stderr
    assert _client(tls_redis, certs).llen("dispatcher") == 0  # nothing went through


def test_without_a_ca_file_the_system_trust_store_refuses_a_private_ca(
    tls_redis: Server, sim: CadSimulator
) -> None:
    done = run_cli(["worker"], base_env(f"rediss://127.0.0.1:{tls_redis.port}/0", sim),
                   timeout=90)
    assert done.returncode != 0, done.stderr
    assert "certificate could not be verified" in done.stderr, done.stderr
    assert "insecure" not in done.stderr.lower(), done.stderr


def test_a_missing_ca_file_is_refused_at_start(tls_redis: Server, tmp_path: Path) -> None:
    env = base_env(f"rediss://127.0.0.1:{tls_redis.port}/0",
                   DISPATCHER_REDIS_CA_FILE=tmp_path / "nope.crt")
    done = run_cli(["stats"], env)
    assert done.returncode == 2
    missing = tmp_path / "nope.crt"
    assert done.stderr.strip() == (
        f"dispatcher: error: DISPATCHER_REDIS_CA_FILE: no such file: {missing}")
