"""What the fake CAD received and created, with every API key redacted.

Records never hold the API key: the v1 ``key`` field, the Authorization header and any
occurrence of a configured or presented key are replaced by ``***`` before storing.
CAD ids start at 10001 and are never reused, not even after ``reset()`` (our assumption).
"""

import copy
import json
import re
import time
from typing import Any

from dispatcher.simulator.api import Request

# The first id the fake CAD hands out; real ids are numeric, their start is unknown.
FIRST_CALL_ID = 10001

_REDACTED = "***"
# Redacts a v1 "key" field in raw text whatever its value's JSON type.
_KEY_FIELD_RE = re.compile(r'("key"\s*:\s*)("(?:[^"\\]|\\.)*"|[^\s,}\]]+)')


def _redact_text(text: str, hidden: tuple[str, ...]) -> str:
    """Replace every v1 key field and every known secret in text by ***."""
    text = _KEY_FIELD_RE.sub(lambda m: m.group(1) + f'"{_REDACTED}"', text)
    for secret in hidden:
        # A secret may appear JSON-escaped in a body, so hide those spellings too.
        escaped = json.dumps(secret)[1:-1]
        for form in {secret, escaped, json.dumps(secret, ensure_ascii=False)[1:-1]}:
            if form:
                text = text.replace(form, _REDACTED)
    return text


def _redact_value(value: Any, hidden: tuple[str, ...]) -> Any:
    """Return a copy of parsed JSON with key fields and secrets replaced by ***."""
    if isinstance(value, dict):
        return {k: _REDACTED if k == "key" else _redact_value(v, hidden) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, hidden) for v in value]
    if isinstance(value, str):
        return _redact_text(value, hidden) if any(s in value for s in hidden) else value
    return value


def request_entry(req: Request, api_key: str) -> dict[str, Any]:
    """Build the record of a request, secrets redacted; Records.add numbers it."""
    hidden = tuple({api_key, req.bearer or ""} - {""})
    if isinstance(req.body, dict) and isinstance(req.body.get("key"), str) and req.body["key"]:
        hidden += (req.body["key"],)
    headers = {
        name: _REDACTED
        if name.lower() in ("authorization", "proxy-authorization")
        else _redact_text(value, hidden)
        for name, value in req.headers.items()
    }
    return {
        "seq": 0,
        "at": time.time(),
        "method": req.method,
        "path": req.target,
        "version": req.version,
        "body": _redact_value(req.body, hidden),
        "raw": _redact_text(req.raw.decode("utf-8", errors="replace"), hidden),
        "headers": headers,
        "status": None,
        "fault": None,
    }


class Records:
    """Every request received and every call created, in order; not thread-safe."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self._seq = 0
        self._next_call_id = FIRST_CALL_ID

    def add(self, entry: dict[str, Any]) -> None:
        """Number a request's entry and keep it."""
        self._seq += 1
        entry["seq"] = self._seq
        self.received.append(entry)

    def create(self, calls: list[dict[str, Any]], version: int) -> list[tuple[int, float]]:
        """Create calls in the fake CAD; return their ids and creation times."""
        created: list[tuple[int, float]] = []
        for call in calls:
            cad_id, at = self._next_call_id, time.time()
            self._next_call_id += 1
            self.calls.append(
                {"cad_id": cad_id, "call": copy.deepcopy(call), "version": version, "at": at}
            )
            created.append((cad_id, at))
        return created

    def clear(self) -> None:
        """Forget what was received and created; numbering and ids go on."""
        self.received.clear()
        self.calls.clear()

    def stats(self) -> dict[str, Any]:
        """Summarise the records: counts, answers by status and duplicate calls."""
        by_status: dict[str, int] = {}
        unanswered = 0
        for entry in self.received:
            if entry["status"] is None:
                unanswered += 1
            else:
                key = str(entry["status"])
                by_status[key] = by_status.get(key, 0) + 1
        seen: set[str] = set()
        duplicates = 0
        for record in self.calls:
            dump = json.dumps(record["call"], sort_keys=True)
            if dump in seen:
                duplicates += 1
            seen.add(dump)
        return {
            "received": len(self.received),
            "created": len(self.calls),
            "by_status": by_status,
            "duplicates": duplicates,
            "unanswered": unanswered,
        }
