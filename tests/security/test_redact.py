"""dispatcher.redact on its own: every form of every secret, and the log filter."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from dispatcher import redact
from dispatcher.settings import Settings

KEY = "k-SECRETSECRET-0123"
SETTINGS = Settings.from_env({
    "SONORAN_API_KEY": KEY, "DISPATCHER_OPS_TOKEN": "ops-token-0123456789ab",
    "DISPATCHER_NOTIFY_URL": "https://hooks.example/api/webhooks/42/tok-abcdef",
    "REDIS_URL": "redis://al:pw-userinfo-9@127.0.0.1:6379/0",
})


@pytest.mark.parametrize("text", [
    KEY, json.dumps(KEY), KEY.replace("S", "\\u0053"), KEY.replace("S", "\\u0053", 1),
    "".join(f"\\u{ord(c):04X}" for c in KEY), quote(KEY, safe=""),
    KEY.replace("S", "%53"), "".join(f"%{b:02x}" for b in KEY.encode()),
    KEY.replace("S", "%5Cu0053"),  # a JSON escape, URL-encoded
    "ops-token-0123456789ab", "/api/webhooks/42/tok-abcdef", "pw-userinfo-9",
    "https://hooks.example/api/webhooks/42/tok-abcdef",
])
def test_every_form_of_every_secret_is_found_and_hidden(text: str) -> None:
    r = redact.Redactor.from_settings(SETTINGS)
    line = f"before {text} after"
    assert r.holds(line)
    shown = r(line)
    assert not r.holds(shown), shown
    assert shown.startswith("before ") and "***" in shown


def test_url_credentials_go_whatever_the_secret_list() -> None:
    r = redact.Redactor([])
    assert (r("at redis://u:p@h:1/0?db=1&password=zz: x")
            == "at redis://u:***@h:1/0?db=1&password=***: x")


def test_text_without_secrets_is_unchanged() -> None:
    r = redact.Redactor.from_settings(SETTINGS)
    text = 'caller "Jane" at 50%\\n of \\u00e9 road'
    assert not r.holds(text) and r(text) == text


@pytest.fixture
def installed() -> Iterator[None]:
    """install() for this test only (it changes process-wide logging and hooks)."""
    factory, hook, thread_hook = (logging.getLogRecordFactory(), sys.excepthook,
                                  threading.excepthook)
    redact.install(SETTINGS)
    yield
    logging.setLogRecordFactory(factory)
    sys.excepthook, threading.excepthook = hook, thread_hook
    redact._current = redact.Redactor([])


def test_the_log_filter_covers_messages_arguments_and_tracebacks(installed: None) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("some.library")
    logger.addHandler(handler)  # a handler added after install, on a library's logger
    try:
        try:
            raise ConnectionError(f"cannot connect to redis://:pw-userinfo-9@h/0 key={KEY}")
        except ConnectionError:
            logger.exception("failed with %s", KEY.replace("S", "\\u0053"))
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "Traceback" in out and "ConnectionError" in out
    for secret in (KEY, "pw-userinfo-9", "\\u0053ECRET"):
        assert secret not in out, out


def test_a_withheld_note_names_the_hash() -> None:
    note = redact.withheld_note(b"abc")
    assert note == ("raw text withheld: it contained the API key (SHA-256 of the entry: "
                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad)")


def test_log_lines_show_terminal_controls_escaped(installed: None) -> None:
    """A caller's text that reaches a log line cannot retitle or clear a tailing terminal."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("some.library")
    logger.addHandler(handler)
    try:
        logger.warning("caller %s\nsecond line\tkept", "\x1b]0;pwned\x07\x1b[2J\u202e\r")
        try:
            raise ValueError("bad caller \x1b[2J")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x0d" in out, out
    assert not any(ch in out for ch in "\x1b\x07\r\u202e")
    assert "\nsecond line\tkept" in out
    assert "ValueError: bad caller \\x1b[2J" in out
