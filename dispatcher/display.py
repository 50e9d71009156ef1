"""Text for a person's terminal: what callers sent, shown visibly, never obeyed.

Calls are stored exactly as sent; anything that reaches a terminal goes through `safe`.
It writes every character a terminal would act on, or that hides or reorders text,
as a visible escape instead: C0 controls (ESC, BEL, CR, LF, TAB...), DEL, C1 controls
(U+0080-U+009F, CSI U+009B among them), bidirectional overrides, embeddings, isolates
and marks, zero-width and other invisible format characters, line and paragraph
separators, Unicode tag characters and lone surrogates. Below U+0100 as ``\\x1b``,
above as ``\\u202e`` (or ``\\U000e0041``). Everything else, accents and other scripts
included, prints as is. JSON output (`json_text`) escapes all non-ASCII instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

_UNSAFE = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"     # C0 controls, DEL, C1 controls
    "\u00ad\u034f"           # soft hyphen, combining grapheme joiner (invisible)
    "\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"  # Arabic letter mark, fillers, Mongolian
    "\u200b-\u200f"          # zero-width space/joiners, LRM, RLM
    "\u2028-\u202e"          # line/paragraph separators, bidi embeddings and overrides
    "\u2060-\u206f"          # word joiner, invisible operators, bidi isolates (2066-2069)
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"  # filler, variation selectors, BOM
    "\ud800-\udfff"          # lone surrogates (cannot even be encoded)
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"  # musical format chars, tags, selectors
    "]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe(value: object) -> str:
    """``str(value)`` with every control, bidi and invisible character escaped visibly."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def safe_lines(value: object) -> str:
    """Like `safe`, but line feeds and tabs stay (a log record, a traceback)."""
    text = value if isinstance(value, str) else str(value)
    if not _UNSAFE.search(text):
        return text
    return "\n".join(
        "\t".join(_UNSAFE.sub(_escape, part) for part in line.split("\t"))
        for line in text.split("\n"))


def json_text(data: Any, indent: int | None = None) -> str:
    """JSON for output: ASCII only (every control and non-ASCII character as ``\\uXXXX``)."""
    # ensure_ascii leaves DEL (U+007F) raw: it is ASCII. Escaped, the JSON is the same.
    return json.dumps(data, indent=indent).replace("\x7f", "\\u007f")
