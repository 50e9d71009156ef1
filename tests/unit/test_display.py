"""dispatcher.display: what reaches a terminal is shown, never obeyed."""

from __future__ import annotations

import json

import pytest

from dispatcher.display import json_text, safe

HOSTILE = [
    ("\x1b]0;pwned\x07\x1b[2J", "\\x1b]0;pwned\\x07\\x1b[2J"),
    ("line\rover", "line\\x0dover"),
    ("a\nb\tc\x00", "a\\x0ab\\x09c\\x00"),
    ("del\x7f", "del\\x7f"),
    ("c1 \x85 \x9b31m", "c1 \\x85 \\x9b31m"),
    ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
    ("\u2066iso\u2069 \u2067x\u2068", "\\u2066iso\\u2069 \\u2067x\\u2068"),
    ("zero\u200bwidth\u200c\u200d\ufeff", "zero\\u200bwidth\\u200c\\u200d\\ufeff"),
    ("lrm\u200e rlm\u200f alm\u061c", "lrm\\u200e rlm\\u200f alm\\u061c"),
    ("sep\u2028\u2029", "sep\\u2028\\u2029"),
    ("tag\U000e0041", "tag\\U000e0041"),
    ("lone\ud800", "lone\\ud800"),
]


@pytest.mark.parametrize(("text", "shown"), HOSTILE)
def test_hostile_characters_are_shown_escaped(text: str, shown: str) -> None:
    assert safe(text) == shown


@pytest.mark.parametrize("text", ["Jane Doe", "José Núñez", "Zoë 🚓", "東京", "مرحبا",
                                  "a \\x1b literal backslash", ""])
def test_ordinary_text_prints_as_is(text: str) -> None:
    assert safe(text) == text


def test_non_text_values_are_stringified() -> None:
    assert safe(42) == "42" and safe(None) == "None"


def test_json_output_is_ascii_and_still_the_same_data() -> None:
    data = {"caller": "\x1b[2J\x07\r\x7f\x85\x9b\u202e\u200b\u2066é"}
    text = json_text(data, indent=2)
    assert text.isascii()
    assert not any(ch in text for ch in "\x1b\x07\r\x7f")
    assert json.loads(text) == data
