"""Strict reading of a JSON request body: one UTF-8 object, I-JSON numbers, bounded depth.

Used by the HTTP doors (`dispatcher.http.ingest`); every refusal is a `BadBody` whose message
says what is wrong in one line, fit to answer as ``INVALID REQUEST BODY: <why>``.
"""

from __future__ import annotations

import codecs
import json
import math
from typing import Any, NoReturn

#: Deepest nesting of arrays/objects in a body (the seed's shape needs 4).
MAX_JSON_DEPTH = 32
#: Largest integer magnitude in a body: what every JSON parser (the CAD's JavaScript
#: too) represents exactly (I-JSON, RFC 7493).
MAX_SAFE_INTEGER = 2**53 - 1


class BadBody(ValueError):
    """The request body is not a JSON document we accept; the message says why."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise BadBody(f"duplicate member name {short(name)!r}")
        obj[name] = value
    return obj


def _no_constant(name: str) -> NoReturn:
    raise BadBody(f"{name} is not a JSON number")


def _int(text: str) -> int:
    # Checked on the text first: converting a 100,000-digit string to int is slow.
    if len(text.lstrip("-")) > 16 or abs(int(text)) > MAX_SAFE_INTEGER:
        raise BadBody(f"a number is out of range (integers must be within +-{MAX_SAFE_INTEGER})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadBody("a number is out of range (too large for a double)")
    return value


def _depth(value: Any) -> int:
    """Deepest nesting of arrays/objects in a parsed JSON value (iterative)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_body(raw: bytes) -> dict[str, Any]:
    """Parse a request body into a JSON object, or raise BadBody saying why."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBody(f"the body is not valid UTF-8 (at byte {exc.start})") from None
    if not text.strip():
        raise BadBody("the body is empty; send a JSON object")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                           parse_int=_int, parse_float=_float)
    except BadBody:
        raise
    except RecursionError:
        raise BadBody(f"the body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise BadBody(f"the body is not valid JSON ({exc.msg} at line {exc.lineno} "
                      f"column {exc.colno})") from None
    except ValueError:  # e.g. an integer beyond Python's digit limit
        raise BadBody("the body holds a number out of range") from None
    if not isinstance(value, dict):
        raise BadBody("the body must be a JSON object")
    # Nesting needs an opening bracket per level: a body with few of them (the common
    # call has 4) cannot be too deep, and the walk over the parsed value is skipped.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise BadBody(f"the body is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def short(text: str, limit: int = 64) -> str:
    """A name or value cut to `limit` characters, for one-line messages."""
    return text if len(text) <= limit else text[:limit] + "..."
