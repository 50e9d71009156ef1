"""dispatcher.sentinel: REDIS_URL=sentinel://..., read once, the same for redis-py and kombu."""

from __future__ import annotations

import time

import pytest
from kombu import Connection
from redis.sentinel import SentinelConnectionPool

from dispatcher import redact
from dispatcher.errors import ConfigError
from dispatcher.redisconn import check_url, connect, kombu_broker
from dispatcher.sentinel import SentinelUrl
from dispatcher.settings import Settings

PASSWORD = "s3nt!nel-P@ss/word"
ENCODED = "s3nt%21nel-P%40ss%2Fword"


def test_three_sentinels_and_a_database() -> None:
    url = SentinelUrl.parse("sentinel://10.0.0.1:26379,10.0.0.2:26380,redis-c/3")

    assert url.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("redis-c", 26379))
    assert (url.db, url.username, url.password) == (3, None, None)


@pytest.mark.parametrize(("text", "user", "password"), [
    (f"sentinel://:{ENCODED}@h1:1,h2:2/0", None, PASSWORD),
    (f"sentinel://dispatcher:{ENCODED}@h1:1,h2:2/0", "dispatcher", PASSWORD),
    ("sentinel://dispatcher@h1:1,h2:2", "dispatcher", None),
])
def test_credentials_are_the_servers(text: str, user: str | None, password: str | None) -> None:
    url = SentinelUrl.parse(text)

    assert (url.username, url.password, url.db) == (user, password, 0)
    assert url.sentinels == (("h1", 1), ("h2", 2))
    assert PASSWORD not in repr(url)


def test_ipv6_sentinels() -> None:
    assert SentinelUrl.parse("sentinel://[::1]:26379,[fe80::2]/1").sentinels == (
        ("::1", 26379), ("fe80::2", 26379))


@pytest.mark.parametrize(("text", "says"), [
    ("sentinel://", "address is empty"),
    ("sentinel://h1:1,,h2:2/0", "address is empty"),
    ("sentinel://h1:99999/0", "must be 1-65535"),
    ("sentinel://h1:port/0", "must be 1-65535"),
    ("sentinel://h1:1,h2:2/zero", "database must be a number"),
    ("sentinel://h1:1;sentinel://h2:2", "comma-separated"),
    ("sentinel://h1:1,h2:2/0?master_name=x", "query arguments are not supported"),
    ("sentinel://[::1:1/0", "cannot read the sentinel address"),
    ("sentinel://h 1:1/0", "cannot read the sentinel address"),
])
def test_a_bad_url_is_one_line_naming_the_problem(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": text})

    message = str(caught.value)
    assert says in message and "\n" not in message
    assert message.startswith("REDIS_URL is not a valid sentinel URL")


def test_a_bad_url_never_shows_the_password() -> None:
    for text in (f"sentinel://:{PASSWORD}@h1:1,h2:x/0", f"sentinel://:{ENCODED}@h1:1/zz"):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"REDIS_URL": text})
        assert PASSWORD not in str(caught.value) and ENCODED not in str(caught.value)


def test_settings_read_the_master_name_and_the_wait() -> None:
    s = Settings.from_env({"REDIS_URL": "sentinel://h1:1,h2:2,h3:3/2",
                           "DISPATCHER_REDIS_SENTINEL_MASTER": "dispatch",
                           "DISPATCHER_REDIS_WAIT": "2"})

    assert (s.redis_sentinel_master, s.redis_wait) == ("dispatch", 2)
    defaults = Settings.from_env({})
    assert (defaults.redis_sentinel_master, defaults.redis_wait) == ("mymaster", 0)


@pytest.mark.parametrize(("name", "value"), [
    ("DISPATCHER_REDIS_WAIT", "-1"), ("DISPATCHER_REDIS_WAIT", "one"),
    ("DISPATCHER_REDIS_WAIT", "17"), ("DISPATCHER_REDIS_SENTINEL_MASTER", "my master"),
])
def test_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def _settings(url: str, **extra: str) -> Settings:
    return Settings.from_env({"REDIS_URL": url, **extra})


def test_redis_py_gets_a_sentinel_managed_master_with_our_timeouts() -> None:
    client = connect(_settings(f"sentinel://:{ENCODED}@127.0.0.1:1,127.0.0.1:2/4",
                               DISPATCHER_REDIS_SENTINEL_MASTER="dispatch"),
                     socket_timeout=1.5)
    pool = client.connection_pool

    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "dispatch"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (4, PASSWORD, 1.5)
    assert kwargs["socket_connect_timeout"] == 1.0
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"],
             s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [
        ("127.0.0.1", 1), ("127.0.0.1", 2)]
    # The sentinels get the timeouts, not the servers' password.
    assert sentinels[0].connection_pool.connection_kwargs.get("password") is None
    assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == 1.5
    client.close()


def test_kombu_gets_its_own_form_and_the_master_name() -> None:
    settings = _settings(f"sentinel://:{ENCODED}@h1:26379,h2:26380/2",
                         DISPATCHER_REDIS_SENTINEL_MASTER="dispatch")
    url, use_ssl, transport = kombu_broker(settings)

    assert url == f"sentinel://:{ENCODED}@h1:26379/2;sentinel://:{ENCODED}@h2:26380/2"
    assert use_ssl is None and transport == {"master_name": "dispatch"}
    # kombu reads it as its Sentinel transport, with both sentinels and our password.
    conn = Connection(url, transport_options=transport)
    assert conn.transport_cls == "sentinel" and conn.password == PASSWORD
    assert conn.virtual_host == "2" and len(conn.alt) == 2


def test_the_password_is_redacted_everywhere_it_could_show() -> None:
    settings = _settings(f"sentinel://:{ENCODED}@h1:1,h2:2/0")

    assert settings.redacted()["redis_url"] == "sentinel://:***@h1:1,h2:2/0"
    assert PASSWORD in redact.redis_credentials(settings.redis_url)
    kombu_url = kombu_broker(settings)[0]
    assert ENCODED not in redact.redact_url(kombu_url)
    assert check_url(settings.redis_url) == {"db": 0, "password": PASSWORD}


def test_no_master_is_one_short_line_naming_the_sentinels() -> None:
    from dispatcher.cli.embedded import free_port
    from dispatcher.redisconn import UNREACHABLE

    port = free_port()  # nobody listens there
    client = connect(_settings(f"sentinel://:{ENCODED}@127.0.0.1:{port},127.0.0.1:{port}/0"))
    started = time.monotonic()
    with pytest.raises(UNREACHABLE) as caught:
        client.ping()
    assert str(caught.value) == (
        f"no master 'mymaster' is up according to the sentinels at 127.0.0.1:{port}, "
        f"127.0.0.1:{port} (sentinels unreachable, another master name, or a failover in "
        "progress)")
    # One try per sentinel, no backoff: the caller's bounded wait decides how long.
    assert time.monotonic() - started < 1.0
    client.close()
