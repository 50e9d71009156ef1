"""Rules of the HTTP door beyond the body's JSON: v2's metaData values, the API key outside
the body, and what a failure part-way through queueing answers.

The key in the v2 path (``serverId``) or in an ``Idempotency-Key`` header would be stored
with the call (serverId, idempotency key) and shown by `dispatcher status`: such a request
gets 400, before anything is queued. `dispatcher.http.ingest` uses these; they hold no state.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from dispatcher.errors import InvalidCall, QueueFull

#: What a client should wait before retrying when the backlog cap is reached (the
#: backlog drains at the CAD's rate, so this is longer than for an unreachable Redis).
QUEUE_FULL_RETRY_AFTER_S = 30

#: Why a request whose path or Idempotency-Key header contains the API key is refused.
KEY_IN_REQUEST = ("the {where} contains the API key; it would be stored with the call, so "
                  "the request is refused: never put the key there")

def v2_body(body: dict[str, Any]) -> dict[str, Any]:
    """A v2 body as `Call.parse` takes it: metaData values made strings (the v2 CAD's
    values are strings) the way the official resource's Lua ``tostring`` makes them:
    true -> "true", 12 -> "12", 1.5 -> "1.5"; an object or array becomes its JSON text
    (Lua would print a table address, which helps no one); a null value leaves the key
    out (a Lua table cannot hold nil). Other members, unknown ones included, are kept."""
    meta = body.get("metaData")
    if not isinstance(meta, dict):
        return body
    return {**body, "metaData": {name: _lua_text(value) for name, value in meta.items()
                                 if value is not None}}


def _lua_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 1.5 -> "1.5", 2.0 -> "2.0" (Lua 5.4's tostring of a float)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def key_outside_body(key: str | None, server_id: str | None, header_key: str | None
                     ) -> str | None:
    """Why the request is refused when the API key is in its path or header, or None."""
    if not key:
        return None
    if server_id is not None and key in server_id:
        return KEY_IN_REQUEST.format(where="path (serverId)")
    if header_key is not None and key in header_key:
        return KEY_IN_REQUEST.format(where="Idempotency-Key header")
    return None


def failure_status(failure: Exception, unavailable_retry_s: int) -> tuple[int, int]:
    """HTTP status and Retry-After seconds of a failure part-way through queueing."""
    if isinstance(failure, QueueFull):
        return 503, QUEUE_FULL_RETRY_AFTER_S
    if isinstance(failure, InvalidCall):  # the producer's own check: retrying cannot help
        return 400, 0
    return 503, unavailable_retry_s


def failure_title(failure: Exception) -> str:
    """The answer's first words: QUEUE FULL is not QUEUE UNAVAILABLE (Redis answered)."""
    if isinstance(failure, QueueFull):
        return "QUEUE FULL"
    if isinstance(failure, InvalidCall):
        return "INVALID CALL"
    return "QUEUE UNAVAILABLE"


class Unsupported(Exception):
    """A Content-Encoding we do not decode."""


def read_body(req: Request) -> bytes:
    """The request body as sent (a compressed one raises Unsupported)."""
    encoding = req.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Unsupported(encoding)
    return req.get_data(cache=False)


def sentence(exc: Exception) -> str:
    text = str(exc).strip()
    return text if text.endswith(".") else text + "."
