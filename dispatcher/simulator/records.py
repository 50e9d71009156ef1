"""What the fake CAD received and created, the life of each 911 call, every API key redacted.

Records never hold the API key: the v1 ``key`` field, the Authorization header and any
occurrence of a configured or presented key are replaced by ``***`` before storing.

A created call stays in its server's emergency list (``active``) until it ends: removed
through the API, expired after ``deleteAfterMinutes``, converted into a dispatch call or
dismissed by a dispatcher; ``ended`` and ``ended_at`` say which and when. Assumptions:
- CAD ids start at 10001 and are never reused, not even after ``reset()``; dispatch calls
  take their ids from the same sequence.
- A call without ``serverId`` belongs to server "1"; server ids compare as strings.
- ``deleteAfterMinutes`` counts from creation; 0 means never (as the CAD treats it), and
  so does a value that is not a positive number (a bool, a negative, a non-numeric text).
- Expiry is swept whenever the lists are read or changed, and ``ended_at`` is the moment
  the call expired, not the moment the sweep noticed.
"""

import copy
import json
import math
import re
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


def request_entry(req: Request, api_key: str, now: float) -> dict[str, Any]:
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
        "at": now,
        "method": req.method,
        "path": req.target,
        "version": req.version,
        "route": req.route,
        "body": _redact_value(req.body, hidden),
        "raw": _redact_text(req.raw.decode("utf-8", errors="replace"), hidden),
        "headers": headers,
        "status": None,
        "fault": None,
    }


#: Matches the calls of every community (the simulator's own read-outs, convert, dismiss).
ANY = object()


def server_of(call: dict[str, Any]) -> str:
    """Return the server a call belongs to, as a string; "1" when it names none."""
    server = call.get("serverId")
    return "1" if server is None else str(server)


def _expiry_s(call: dict[str, Any]) -> float:
    """Return how many seconds a call stays listed by its deleteAfterMinutes; 0 means forever."""
    minutes = call.get("deleteAfterMinutes")
    if isinstance(minutes, str):
        try:
            minutes = float(minutes)
        except ValueError:
            return 0.0
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        return 0.0
    return max(0.0, float(minutes) * 60.0) if math.isfinite(minutes) else 0.0


def _tag(call: dict[str, Any]) -> str | None:
    """Return the dispatcher's tag (metaData.dispatcherCallId) of a call, if it has one."""
    meta = call.get("metaData")
    tag = meta.get("dispatcherCallId") if isinstance(meta, dict) else None
    return None if tag is None else str(tag)


class Records:
    """Every request received, every call created and the dispatch calls; not thread-safe."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        # Dispatch calls a dispatcher made from 911 calls: {"server_id", "item"}.
        self.dispatch: list[dict[str, Any]] = []
        self._seq = 0
        self._next_call_id = FIRST_CALL_ID
        self._expires: dict[int, float] = {}  # cad_id -> when it leaves the list

    def add(self, entry: dict[str, Any]) -> None:
        """Number a request's entry and keep it."""
        self._seq += 1
        entry["seq"] = self._seq
        self.received.append(entry)

    def create(
        self, calls: list[dict[str, Any]], version: int, now: float, community: str | None = None
    ) -> list[tuple[int, float]]:
        """Create calls in the fake CAD (in an added community, or None: the main one);
        return their ids and creation times."""
        created: list[tuple[int, float]] = []
        for call in calls:
            cad_id = self._new_id()
            self.calls.append(
                {
                    "cad_id": cad_id,
                    "call": copy.deepcopy(call),
                    "version": version,
                    "at": now,
                    "active": True,
                    "ended": None,
                    "ended_at": None,
                    "community": community,
                }
            )
            lifetime = _expiry_s(call)
            if lifetime > 0:
                self._expires[cad_id] = now + lifetime
            created.append((cad_id, now))
        return created

    def listed(
        self, server_id: str | None, now: float, community: object = ANY
    ) -> list[dict[str, Any]]:
        """Return the records of the calls still in the emergency list (of one server, of
        one community: a community never sees another's calls)."""
        self._sweep(now)
        return [
            r
            for r in self.calls
            if r["active"]
            and (server_id is None or server_of(r["call"]) == server_id)
            and (community is ANY or r["community"] == community)
        ]

    def end(self, cad_id: int, how: str, now: float, server_id: str | None = None,
            community: object = ANY) -> bool:
        """Take a listed call (of that server and community) off the list; False when it
        was not listed."""
        record = self._find(cad_id, server_id, now, community)
        if record is not None:
            record.update(active=False, ended=how, ended_at=now)
        return record is not None

    def convert(self, cad_id: int, now: float) -> int:
        """Turn a listed 911 call into a dispatch call; return the dispatch call's id."""
        record = self._find(cad_id, None, now)
        if record is None:
            raise ValueError(f"call {cad_id} is not in the emergency list")
        record.update(active=False, ended="converted", ended_at=now)
        call = record["call"]
        dispatch_id = self._new_id()
        item = {
            "callId": dispatch_id,
            "title": "911 call",
            "address": call.get("location", ""),
            "description": call.get("description", ""),
            "metaData": {"origin911Id": str(cad_id)},
        }
        self.dispatch.append(
            {"server_id": server_of(call), "item": item, "community": record["community"]}
        )
        return dispatch_id

    def dispatch_listed(self, server_id: str, community: object = ANY) -> list[dict[str, Any]]:
        """Return the dispatch calls of a server (of one community), as the CAD lists them."""
        return [
            copy.deepcopy(d["item"])
            for d in self.dispatch
            if d["server_id"] == server_id and (community is ANY or d["community"] == community)
        ]

    def clear(self) -> None:
        """Forget what was received and created; numbering and ids go on."""
        self.received.clear()
        self.calls.clear()
        self.dispatch.clear()
        self._expires.clear()

    def stats(self, now: float) -> dict[str, Any]:
        """Summarise the records: counts, answers by status, duplicates and the lists."""
        self._sweep(now)
        by_status: dict[str, int] = {}
        unanswered = 0
        for entry in self.received:
            if entry["status"] is None:
                unanswered += 1
            else:
                key = str(entry["status"])
                by_status[key] = by_status.get(key, 0) + 1
        seen: set[str] = set()
        tags: set[str] = set()
        duplicates = duplicate_tags = 0
        for record in self.calls:
            dump = json.dumps(record["call"], sort_keys=True)
            if dump in seen:
                duplicates += 1
            seen.add(dump)
            tag = _tag(record["call"])
            if tag in tags:
                duplicate_tags += 1
            elif tag is not None:
                tags.add(tag)
        return {
            "received": len(self.received),
            "created": len(self.calls),
            "by_status": by_status,
            "duplicates": duplicates,
            "unanswered": unanswered,
            "active": sum(1 for r in self.calls if r["active"]),
            "removed": sum(1 for r in self.calls if r["ended"] == "removed"),
            "duplicate_tags": duplicate_tags,
        }

    def _new_id(self) -> int:
        """Hand out the next CAD id."""
        cad_id = self._next_call_id
        self._next_call_id += 1
        return cad_id

    def _find(self, cad_id: int, server_id: str | None, now: float,
              community: object = ANY) -> dict[str, Any] | None:
        """Return the record of a listed call (of that server and community), or None."""
        listed = self.listed(server_id, now, community)
        return next((r for r in listed if r["cad_id"] == cad_id), None)

    def _sweep(self, now: float) -> None:
        """End every listed call whose deleteAfterMinutes has passed, at the moment it did."""
        for record in self.calls:
            expires = self._expires.get(record["cad_id"])
            if record["active"] and expires is not None and expires <= now:
                record.update(active=False, ended="expired", ended_at=expires)
