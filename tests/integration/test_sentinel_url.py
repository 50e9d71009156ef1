"""REDIS_URL=sentinel://:password@... against a real Sentinel deployment: redis-py, kombu
and the CLI all reach the master with the servers' password, and none prints it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kombu import Connection

from dispatcher.redisconn import connect, kombu_broker
from dispatcher.settings import Settings
from tests.conftest import base_env, run_cli
from tests.redis_ha import SentinelCluster

pytestmark = pytest.mark.integration

PASSWORD = "ha-Pass/word@42"
ENCODED = "ha-Pass%2Fword%4042"


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    c = SentinelCluster(replicas=1, password=PASSWORD).start()
    yield c
    c.stop()


def url(cluster: SentinelCluster) -> str:
    return cluster.url(db=3, password=ENCODED)


def test_redis_py_reaches_the_master_through_the_sentinels(cluster: SentinelCluster) -> None:
    client = connect(Settings.from_env({"REDIS_URL": url(cluster)}))
    try:
        client.set("ha:probe", "1")
        assert client.connection_pool.get_master_address() == ("127.0.0.1", cluster.master.port)
        master = cluster.server_client(cluster.master.port)
        master.select(3)
        assert master.get("ha:probe") == b"1"  # database 3 of the master
    finally:
        client.close()


def test_kombu_reaches_the_master_through_the_sentinels(cluster: SentinelCluster) -> None:
    broker, _, transport = kombu_broker(Settings.from_env({"REDIS_URL": url(cluster)}))
    with Connection(broker, transport_options=transport) as conn:
        queue = conn.SimpleQueue("ha-probe")
        queue.put({"n": 1})
        assert queue.get(timeout=5).payload == {"n": 1}
        queue.close()


def test_the_cli_works_and_never_prints_the_password(cluster: SentinelCluster) -> None:
    env = base_env(url(cluster))
    done = run_cli(["stats", "--json"], env, timeout=30)
    assert done.returncode == 0, done.stderr
    bad = run_cli(["stats"], {**env, "REDIS_URL": url(cluster).replace("/3", "/x")})
    assert bad.returncode == 2 and "not a valid sentinel URL" in bad.stderr
    for out in (done.stdout, done.stderr, bad.stdout, bad.stderr):
        assert PASSWORD not in out and ENCODED not in out


def test_a_wrong_password_is_one_line_about_the_credentials(cluster: SentinelCluster) -> None:
    wrong = url(cluster).replace(ENCODED, "not-the-password")
    done = run_cli(["stats"], base_env(wrong), timeout=30)
    assert done.returncode != 0
    assert "credentials" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "not-the-password" not in done.stderr
