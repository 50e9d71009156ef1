"""dispatcher.settings: contract defaults, one-line errors, and a key that never prints."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest

from dispatcher.errors import ConfigError
from dispatcher.settings import Secret, Settings

KEY = "settings-secret-Zq81xK"


def _logged(msg: str, *args: object) -> str:
    """What a log line with these arguments would say."""
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None).getMessage()


def test_defaults_are_the_contracts() -> None:
    s = Settings.from_env({})

    assert s.redis_url == "redis://localhost:6379/0"
    assert s.api_url == "https://api.sonorancad.com"
    assert s.server_id == "1"
    assert s.api_version == 1
    assert s.max_rate == 1.0
    assert s.max_age_s is None
    assert s.inbox_key == "dispatcher:inbox"
    assert s.port == 8000
    assert s.community_id is None
    assert s.api_key is None


def test_v2_defaults_to_ten_requests_a_minute() -> None:
    s = Settings.from_env({"SONORAN_API_VERSION": "2"})

    assert s.api_version == 2
    assert s.max_rate == pytest.approx(10 / 60)
    assert round(s.max_rate, 4) == 0.1667


def test_an_explicit_rate_wins_over_the_version_default() -> None:
    v2 = Settings.from_env({"SONORAN_API_VERSION": "2", "DISPATCHER_MAX_RATE": "0.5"})
    assert v2.max_rate == 0.5
    assert Settings.from_env({"DISPATCHER_MAX_RATE": "0"}).max_rate == 0.0


def test_every_variable_is_read() -> None:
    s = Settings.from_env({**_SAMPLES, "SONORAN_COMMUNITY_ID": "comm", "SONORAN_API_KEY": KEY,
                           "SONORAN_API_URL": "https://staging-api.dev.sonorancad.com/"})

    assert s.redis_url == "redis://cache:6380/2"
    assert s.api_url == "https://staging-api.dev.sonorancad.com"  # trailing slash dropped
    assert s.community_id == "comm"
    assert s.api_key == Secret(KEY)
    assert s.api_key is not None and s.api_key.reveal() == KEY
    assert (s.server_id, s.api_version, s.max_rate) == ("7", 2, 2.5)
    assert (s.max_age_s, s.inbox_key, s.port) == (600.0, "my:inbox", 9100)
    assert (s.spool_dir, s.web_host, s.web_processes) == ("/var/spool/dispatcher",
                                                          "127.0.0.1", 2)


def test_blank_values_mean_unset() -> None:
    s = Settings.from_env({"SONORAN_API_KEY": "   ", "PORT": "", "SONORAN_SERVER_ID": " "})

    assert s.api_key is None
    assert s.port == 8000
    assert s.server_id == "1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SONORAN_API_VERSION", "3"),
        ("SONORAN_API_VERSION", "v1"),
        ("DISPATCHER_MAX_RATE", "fast"),
        ("DISPATCHER_MAX_RATE", "-1"),
        ("DISPATCHER_MAX_RATE", "inf"),
        ("DISPATCHER_MAX_RATE", "nan"),
        ("DISPATCHER_MAX_AGE_S", "0"),
        ("DISPATCHER_MAX_AGE_S", "-5"),
        ("DISPATCHER_MAX_AGE_S", "a day"),
        ("SONORAN_API_URL", "api.sonorancad.com"),
        ("SONORAN_API_URL", "ftp://api.sonorancad.com"),
        ("REDIS_URL", "http://localhost:6379"),
        ("PORT", "eighty"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("DISPATCHER_CONCURRENCY", "0"),
        ("DISPATCHER_CONCURRENCY", "many"),
        ("DISPATCHER_VISIBILITY_TIMEOUT_S", "soon"),
    ],
)
def test_a_bad_value_is_a_one_line_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})

    message = str(info.value)
    assert name in message
    assert "\n" not in message
    assert message.strip() == message and message


@pytest.mark.parametrize(("name", "value"), [("PORT", "8000.5"), ("DISPATCHER_CONCURRENCY", "2.5")])
def test_a_fractional_integer_is_rejected(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_a_bad_redis_url_error_does_not_echo_a_password() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REDIS_URL": "http://:hunter2@cache:6379"})

    assert "hunter2" not in str(info.value)


def test_require_credentials_names_the_missing_community_id() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SONORAN_API_KEY": KEY}).require_credentials()

    assert "SONORAN_COMMUNITY_ID" in str(info.value)
    assert "\n" not in str(info.value)
    assert KEY not in str(info.value)


def test_require_credentials_names_the_missing_key() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SONORAN_COMMUNITY_ID": "comm"}).require_credentials()

    assert "SONORAN_API_KEY" in str(info.value)
    assert "\n" not in str(info.value)


def test_require_credentials_passes_with_both() -> None:
    s = Settings.from_env({"SONORAN_COMMUNITY_ID": "comm", "SONORAN_API_KEY": KEY})
    s.require_credentials()


def test_the_secret_never_prints_itself() -> None:
    secret = Secret(KEY)

    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}",
             _logged("%s %r", secret, secret), format(secret, "")]

    assert all(KEY not in text for text in shown)
    assert secret.reveal() == KEY
    assert bool(secret) and not bool(Secret(""))


def test_settings_never_show_the_key() -> None:
    s = Settings.from_env(
        {"SONORAN_COMMUNITY_ID": "comm", "SONORAN_API_KEY": KEY, "REDIS_URL": "redis://:pw@h:1/0"}
    )

    shown = [repr(s), str(s), f"{s}", f"{s!r}", format(s, ""), _logged("%s", s),
             repr(dataclasses.asdict(s)), repr(vars(s)), repr(s.with_(port=1)),
             json.dumps(s.redacted())]

    assert all(KEY not in text for text in shown)
    assert s.redacted()["api_key"] == "set"
    assert Settings.from_env({}).redacted()["api_key"] == "not set"


def test_redacted_hides_the_redis_password_too() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://user:hunter2@cache:6379/0"})

    assert "hunter2" not in json.dumps(s.redacted())
    assert s.redacted()["redis_url"] == "redis://user:***@cache:6379/0"


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})

    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    assert s.with_(port=1).port == 1 and s.port == 8000


#: A value other than the default for every variable the README's table documents.
_SAMPLES = {
    "REDIS_URL": "redis://cache:6380/2",
    "SONORAN_API_URL": "https://staging-api.dev.sonorancad.com",
    "SONORAN_COMMUNITY_ID": "other-community",
    "SONORAN_API_KEY": "another-api-key-123",
    "SONORAN_SERVER_ID": "7",
    "SONORAN_API_VERSION": "2",
    "DISPATCHER_MAX_RATE": "2.5",
    "DISPATCHER_MAX_AGE_S": "600",
    "DISPATCHER_INBOX_KEY": "my:inbox",
    "PORT": "9100",
    "DISPATCHER_CONCURRENCY": "4",
    "DISPATCHER_VISIBILITY_TIMEOUT_S": "120",
    "DISPATCHER_READ_TIMEOUT_S": "4",
    "DISPATCHER_CIRCUIT_COOLDOWN_S": "1",
    "DISPATCHER_CIRCUIT_MAX_COOLDOWN_S": "9",
    "DISPATCHER_ORPHAN_AFTER_S": "30",
    "DISPATCHER_SPOOL_DIR": "/var/spool/dispatcher",
    "DISPATCHER_WEB_HOST": "127.0.0.1",
    "DISPATCHER_OPS_TOKEN": "ops-token-0123456789",
    "WEB_CONCURRENCY": "2",
    "DISPATCHER_TRUSTED_PROXIES": "1",
    "DISPATCHER_INGEST_RATE": "20",
    "DISPATCHER_MAX_BACKLOG": "1000",
    "DISPATCHER_MAX_INVALID": "50",
    "DISPATCHER_NOTIFY_URL": "https://discord.example/api/webhooks/1/abc",
    "DISPATCHER_REDIS_CA_FILE": "/etc/ssl/redis-ca.pem",
    "DISPATCHER_COMMUNITIES": "/etc/dispatcher/communities.toml",
    "SONORAN_API_KEY_PREVIOUS": "the-old-api-key-456",
    "DISPATCHER_REDIS_SENTINEL_MASTER": "dispatch-primary",
    "DISPATCHER_REDIS_WAIT": "1",
}


def _documented_variables() -> list[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.M)


def test_the_readme_documents_every_sampled_variable() -> None:
    assert sorted(_documented_variables()) == sorted(_SAMPLES)


@pytest.mark.parametrize("name", sorted(_SAMPLES))
def test_every_documented_variable_changes_the_settings(name: str) -> None:
    base = {"SONORAN_COMMUNITY_ID": "comm", "SONORAN_API_KEY": KEY}
    assert Settings.from_env({**base, name: _SAMPLES[name]}) != Settings.from_env(base), (
        f"{name} is documented in the README but not read")
