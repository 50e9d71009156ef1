"""Rules of the HTTP door beyond the body's JSON: v2's own members, the API key outside
the body, and what a failure part-way through queueing answers.

The key in the v2 path (``serverId``) or in an ``Idempotency-Key`` header would be stored
with the call (serverId, idempotency key) and shown by `dispatcher status`: such a request
gets 400, before anything is queued. `dispatcher.http.ingest` uses these; they hold no state.
"""

from __future__ import annotations

from typing import Any

from flask import Request

from dispatcher.errors import InvalidCall, QueueFull
from dispatcher.http.body import short

#: What a client should wait before retrying when the backlog cap is reached (the
#: backlog drains at the CAD's rate, so this is longer than for an unreachable Redis).
QUEUE_FULL_RETRY_AFTER_S = 30

#: Why a request whose path or Idempotency-Key header contains the API key is refused.
KEY_IN_REQUEST = ("the {where} contains the API key; it would be stored with the call, so "
                  "the request is refused: never put the key there")

#: Members of a v2 body (``serverId`` is accepted and ignored: the path's is used).
V2_FIELDS = frozenset({"isEmergency", "caller", "location", "description", "metaData",
                       "deleteAfterMinutes", "idempotencyKey", "serverId"})


def v2_check(body: dict[str, Any]) -> None:
    """What v2 asks beyond `Call.parse`: its own members only, metaData values strings."""
    unknown = sorted(name for name in body if name not in V2_FIELDS)
    if unknown:
        hint = " (v2 takes it in metaData)" if unknown[0] in ("postal", "plate") else ""
        raise InvalidCall(f"unknown field {short(unknown[0])!r}{hint}", short(unknown[0]))
    meta = body.get("metaData")
    if isinstance(meta, dict):
        for name, value in meta.items():
            if not isinstance(value, str):
                field = f"metaData.{short(name)}"
                raise InvalidCall(f"{field} must be a string (v2 metaData values are strings)",
                                  field)


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
