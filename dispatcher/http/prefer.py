"""Reading ``Prefer: wait=N`` (RFC 7240) off a request, the one preference the doors honour.

The grammar, leniently: ``Prefer = 1#preference`` (comma-separated, in one header or
several), ``preference = token [BWS "=" BWS word] *(OWS ";" [OWS parameter])``, ``word
= token / quoted-string``. Names are case-insensitive; only the first ``wait`` counts
(RFC 7240 section 2: a preference given twice is read once, the first). Its value must
be delta-seconds (digits, quoted or not); any other value is ignored, as the RFC asks of
a preference a server does not understand. Above `MAX_WAIT_S` it is taken as
`MAX_WAIT_S`; 0 means do not wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

#: Longest wait a request may ask for, seconds (a larger N is taken as this).
MAX_WAIT_S = 30


def wait_seconds(values: Iterable[str]) -> int:
    """Seconds the request prefers to wait (0: no wait), from its ``Prefer`` header values."""
    for name, value in _preferences(values):
        if name != "wait":
            continue
        if value is None or not value.isascii() or not value.isdigit():
            return 0
        # Compared as text first: int() of thousands of digits is slow (and may refuse).
        return MAX_WAIT_S if len(value.lstrip("0")) > 2 else min(int(value), MAX_WAIT_S)
    return 0


def _preferences(values: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """Each preference's lowercased name and its value (None without ``=``), in order."""
    for header in values:
        for element in _split(header, ","):
            head = _split(element, ";")[0] if element.strip() else ""
            name, eq, value = head.partition("=")
            name = name.strip().lower()
            if name:
                yield name, _unquote(value.strip()) if eq else None


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside quoted strings (a backslash escapes in quotes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(word: str) -> str:
    """A token as is; a quoted-string without its quotes and escapes."""
    if len(word) >= 2 and word[0] == word[-1] == '"':
        out: list[str] = []
        escaped = False
        for ch in word[1:-1]:
            if escaped or ch != "\\":
                out.append(ch)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return word
