"""dispatcher.communities: the DISPATCHER_COMMUNITIES file, read as a user writes it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dispatcher import communities
from dispatcher.errors import ConfigError
from dispatcher.settings import Settings

BASE = {"SONORAN_COMMUNITY_ID": "solo", "SONORAN_API_KEY": "solo-key-0123456789"}
FILE = """
[communities.north]
id = "community-42"
key_env = "NORTH_KEY"
api_version = 1
max_rate = 2
default = true

[communities.training]
id = "community-7"
key = "training-key-abcdefgh"
api_version = 2
api_url = "http://127.0.0.1:9/"
server_id = 3
"""


def load(text: str, tmp_path: Path, **env: str) -> communities.Communities:
    path = tmp_path / "communities.toml"
    path.write_text(text)
    settings = Settings.from_env({**BASE, "DISPATCHER_COMMUNITIES": str(path), **env})
    return communities.load(settings, {"NORTH_KEY": "north-key-0123456789", **env})


def test_without_the_file_one_default_community_from_the_sonoran_variables() -> None:
    settings = Settings.from_env(BASE)
    found = communities.load(settings, {})

    assert found.names == ["default"]
    only = found.get(None)
    assert only.settings is settings and only.prefix == "dispatcher"
    assert found.for_credentials("solo", "solo-key-0123456789", 0.0) is only
    assert found.for_credentials("solo", "wrong", 0.0) is None


def test_each_community_has_its_own_settings_and_prefix(tmp_path: Path) -> None:
    found = load(FILE, tmp_path)

    assert found.names == ["north", "training"]
    north, training = found.get("north"), found.get("training")
    assert found.get(None) is north
    assert north.prefix == "dispatcher@north" and training.prefix == "dispatcher@training"
    assert north.settings.community == "north"
    assert north.settings.api_key is not None
    assert north.settings.api_key.reveal() == "north-key-0123456789"
    assert north.settings.max_rate == 2.0
    assert training.settings.api_version == 2
    assert training.settings.max_rate == pytest.approx(10 / 60)  # v2's own default
    assert training.settings.api_url == "http://127.0.0.1:9"
    assert training.settings.server_id == "3"
    assert found.for_credentials("community-7", "training-key-abcdefgh", 0) is training
    assert found.for_credentials("community-42", "training-key-abcdefgh", 0) is None
    assert found.for_key("north-key-0123456789", 0) is north


def test_dispatcher_max_rate_is_the_default_of_a_community_without_one(tmp_path: Path) -> None:
    found = load(FILE, tmp_path, DISPATCHER_MAX_RATE="5")

    assert found.get("north").settings.max_rate == 2.0
    assert found.get("training").settings.max_rate == 5.0


def test_a_community_named_default_keeps_the_bare_prefix(tmp_path: Path) -> None:
    found = load('[communities.default]\nid = "a"\nkey = "key-of-a-0123456"\n', tmp_path)

    assert found.get(None).prefix == "dispatcher"


def test_several_without_a_default_refuse_an_unnamed_call(tmp_path: Path) -> None:
    found = load(FILE.replace("default = true", ""), tmp_path)

    with pytest.raises(ConfigError, match="names no community and there is no default"):
        found.get(None)
    with pytest.raises(ConfigError, match="unknown community 'south'"):
        found.get("south")


def test_previous_key_is_accepted_until_its_end(tmp_path: Path) -> None:
    text = FILE + 'previous_key = "old-training-key-1"\nprevious_key_until = 2027-01-31T00:00:00Z\n'
    training = load(text, tmp_path).get("training")
    end = training.previous_key_until
    assert end is not None

    assert training.accepts("old-training-key-1", end - 1)
    assert not training.accepts("old-training-key-1", end)
    assert training.accepts("training-key-abcdefgh", end + 1)


def test_sonoran_api_key_previous_for_one_community() -> None:
    settings = Settings.from_env({**BASE, "SONORAN_API_KEY_PREVIOUS": "the-old-key-0123"})
    only = communities.load(settings, {}).get(None)

    assert only.previous_key_until == math.inf
    assert only.accepts("the-old-key-0123", 1e12)


@pytest.mark.parametrize(("text", "message"), [
    ("", "no community"),
    ("[other]\n", "unknown table or key 'other'"),
    ('[communities."North Side"]\nid = "a"\nkey = "k"\n', "the name must be"),
    ('[communities.a]\nkey = "k"\n', r"\[communities.a\]: id is missing"),
    ('[communities.a]\nid = "a"\n', "key or key_env is missing"),
    ('[communities.a]\nid = "a"\nkey = "k"\nkey_env = "K"\n', "set key or key_env, not both"),
    ('[communities.a]\nid = "a"\nkey_env = "UNSET_VAR"\n', "names UNSET_VAR, which is not set"),
    ('[communities.a]\nid = "a"\nkey = "k"\napi_version = 3\n', "api_version must be 1 or 2"),
    ('[communities.a]\nid = "a"\nkey = "k"\nmax_rate = -1\n', "max_rate must be a number >= 0"),
    ('[communities.a]\nid = "a"\nkey = "k"\napi_url = "ftp://x"\n', "api_url must start"),
    ('[communities.a]\nid = "a"\nkey = "k"\ncolour = "red"\n', "unknown field 'colour'"),
    ('[communities.a]\nid = "a"\nkey = "k"\nprevious_key = "o"\n', "needs previous_key_until"),
    ('[communities.a]\nid = "a"\nkey = "k"\ndefault = true\n[communities.b]\nid = "b"\n'
     'key = "l"\ndefault = true\n', "default = true on more than one community"),
    ('[communities.a]\nid = "x"\nkey = "k"\n[communities.b]\nid = "x"\nkey = "k"\n',
     "could not tell them apart"),
    ("[communities.a\n", "is not valid TOML"),
])
def test_a_wrong_file_is_one_line_naming_what_is_wrong(tmp_path: Path, text: str,
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(text, tmp_path)
    assert "\n" not in str(caught.value)


def test_an_error_never_shows_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load('[communities.a]\nid = "a"\nkey = 12345678901\n', tmp_path)
    assert "12345678901" not in str(caught.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    settings = Settings.from_env({**BASE, "DISPATCHER_COMMUNITIES": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="cannot read"):
        communities.load(settings, {})


def test_a_communitys_producer_names_itself_or_another(tmp_path: Path) -> None:
    import fakeredis

    from dispatcher.producer import Producer

    path = tmp_path / "c.toml"
    path.write_text(FILE)
    env = {**BASE, "DISPATCHER_COMMUNITIES": str(path), "NORTH_KEY": "north-key-0123456789"}
    base = Producer(Settings.from_env(env), client=fakeredis.FakeRedis())
    north, training = base.of("north"), base.of("training")

    assert base.of(None) is north and north.of(None) is north and north.of("north") is north
    assert north.of("training") is training and training.of(None) is training
    assert training.settings.prefix == "dispatcher@training"
    assert sorted(base.keys()) == ["north-key-0123456789", "solo-key-0123456789",
                                   "training-key-abcdefgh"]
