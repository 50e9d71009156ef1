"""The call: what a caller hands us, validated before anything is stored.

A `Call` is the seed's call object (``serverId``, ``isEmergency``, ``caller``,
``location``, ``description``, ``metaData``, optional ``deleteAfterMinutes``) plus our
envelope: an id given at enqueue, the optional idempotency key and the enqueue time.
The call is stored in Redis under its id (the queue's messages carry only the id and
a generation) and, while Redis is away, spooled to disk whole (`Call.to_dict`).
It never holds credentials. `Call.parse` accepts both input shapes of the contract
(the flat form and the seed's own call object) and names the field that is wrong.

Members of a call object we do not know (``coords`` from scripts, fields the official
resource or the CAD add later) are kept as they came in `Call.extra` and sent to the
CAD with the call (a door must not lose what a caller meant the CAD to get); only their
names (1..`MAX_EXTRA_NAME` characters, at most `MAX_EXTRA_FIELDS`) and the whole call's
size are limited. ``deleteAfter`` (older official resources) is ``deleteAfterMinutes``,
as the official resource renames it: when both are given ``deleteAfterMinutes`` wins
(`dispatcher.callextra`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from dispatcher import clock as shared_clock
from dispatcher.callextra import MAX_EXTRA_FIELDS, MAX_EXTRA_NAME, checked_extra, renamed
from dispatcher.errors import InvalidCall

#: Version of `Call.to_dict`; bumped when the envelope changes shape.
SCHEMA_VERSION = 1

# Size limits. Generous for any real 911 call, small enough that hostile input cannot
# fill Redis or the CAD: a whole call is at most MAX_CALL_BYTES of JSON.
MAX_CALLER = 256
MAX_LOCATION = 512
MAX_DESCRIPTION = 4000
MAX_POSTAL = 16
MAX_PLATE = 32
MAX_SERVER_ID = 32
MAX_META_KEYS = 50
MAX_META_KEY = 64
MAX_IDEMPOTENCY_KEY = 200
MAX_DELETE_AFTER_MINUTES = 525_600  # one year
MAX_CALL_BYTES = 16 * 1024  # extras included

FLAT_FIELDS = frozenset(
    {"caller", "location", "description", "postal", "plate", "serverId", "isEmergency",
     "metaData", "idempotencyKey", "deleteAfterMinutes"}
)
SEED_FIELDS = frozenset(
    {"serverId", "isEmergency", "caller", "location", "description", "metaData",
     "deleteAfterMinutes", "idempotencyKey"}
)
_KNOWN = FLAT_FIELDS | SEED_FIELDS
__all__ = ["MAX_EXTRA_FIELDS", "MAX_EXTRA_NAME", "Call", "new_call_id", "iso_utc"]
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD)

#: metaData keys every sent call carries: our id (the CAD's list then shows which of our
#: calls it has, `dispatcher.readback`) and when the call was made, so a call delivered
#: after an outage does not look new to the dispatcher. Ours win over a caller's own.
TAG_ID = "dispatcherCallId"
TAG_QUEUED_AT = "dispatcherQueuedAt"
#: Set ("true") when a call's deleteAfterMinutes had already passed when it was sent: it is
#: sent anyway, with the smallest value the CAD accepts (1).
TAG_DELETE_AFTER_PASSED = "dispatcherDeleteAfterPassed"


def new_call_id(now: float | None = None) -> str:
    """A 26-character ULID: sortable by creation time, unique without coordination."""
    ms = int((shared_clock.now() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    # 160 bits in base32 are 32 characters; the last 26 are the 130 low bits (the top
    # ones are zero), mapped from RFC 4648's alphabet to Crockford's.
    return base64.b32encode(value.to_bytes(20, "big"))[6:].decode().translate(_TO_CROCKFORD)


@dataclass(frozen=True)
class Call:
    """One 911 call, validated; immutable once built."""

    caller: str
    location: str
    description: str
    is_emergency: bool = True
    server_id: str | int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    delete_after_minutes: int | None = None
    id: str = ""
    idempotency_key: str | None = None
    enqueued_at: float = 0.0
    #: Members of the call object we do not know, kept as they came and sent as they came.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unknown_fields(self) -> tuple[str, ...]:
        """Names of the extra top-level members (`extra`), sorted."""
        return tuple(sorted(self.extra))

    @classmethod
    def create(
        cls,
        *,
        caller: Any,
        location: Any,
        description: Any,
        postal: Any = None,
        plate: Any = None,
        server_id: Any = None,
        is_emergency: Any = True,
        metadata: Any = None,
        delete_after_minutes: Any = None,
        idempotency_key: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Call:
        """Build and validate a call from Python arguments (the producer API's shape).

        ``extra`` holds further top-level members of the call object under their JSON
        names (``{"coords": {"x": 1.0, "y": 2.0}}``), sent to the CAD as given. A
        mapping rather than ``**kwargs``: the names are the CAD's (any JSON name, not
        only Python identifiers) and cannot be mistaken for a misspelt argument.
        Names of known fields are refused there (give them as arguments).
        """
        extras = dict(extra or {})
        taken = sorted(str(k) for k in extras if k in _KNOWN)
        if taken:
            raise InvalidCall(f"extra field {taken[0]!r} is a known field; pass it as an "
                              "argument", taken[0])
        return cls.parse(
            {
                **extras,
                "caller": caller,
                "location": location,
                "description": description,
                "postal": postal,
                "plate": plate,
                "serverId": server_id,
                "isEmergency": is_emergency,
                "metaData": metadata,
                "deleteAfterMinutes": delete_after_minutes,
                "idempotencyKey": idempotency_key,
            }
        )

    @classmethod
    def parse(cls, obj: Any) -> Call:
        """Validate a flat-form or seed-form call object (any JSON value) into a Call."""
        if not isinstance(obj, Mapping):
            raise InvalidCall(f"a call must be a JSON object, got {_json_type(obj)}")
        obj = renamed(obj)
        extra = checked_extra({k: v for k, v in obj.items() if k not in _KNOWN})
        meta_in = obj.get("metaData")
        if meta_in is None:
            meta: dict[str, Any] = {}
        elif isinstance(meta_in, Mapping):
            meta = dict(meta_in)
        else:
            raise InvalidCall(
                f"metaData must be an object, got {_json_type(meta_in)}", "metaData"
            )
        for name in ("postal", "plate"):
            if obj.get(name) is not None:
                if name in meta and meta[name] not in (None, "", obj[name]):
                    raise InvalidCall(f"{name} is given twice with different values", name)
                meta[name] = obj[name]
        _check_meta(meta)
        call = cls(
            caller=_text(obj.get("caller"), "caller", MAX_CALLER),
            location=_text(obj.get("location"), "location", MAX_LOCATION),
            description=_text(obj.get("description"), "description", MAX_DESCRIPTION),
            is_emergency=_bool(obj.get("isEmergency", True), "isEmergency"),
            server_id=_server_id(obj.get("serverId")),
            metadata=meta,
            delete_after_minutes=_delete_after(obj.get("deleteAfterMinutes")),
            idempotency_key=_idempotency_key(obj.get("idempotencyKey")),
            extra=extra,
        )
        body = call.to_cad()
        size = len(json.dumps(body, ensure_ascii=False).encode())
        if size > MAX_CALL_BYTES:
            biggest = max(body, key=lambda k: len(json.dumps(body[k], ensure_ascii=False)))
            raise InvalidCall(
                f"the call is {size} bytes of JSON, more than {MAX_CALL_BYTES} "
                f"(largest field: {biggest})", biggest,
            )
        return call

    def with_envelope(self, call_id: str, enqueued_at: float) -> Call:
        """The same call with the id and time given at enqueue."""
        return Call(
            caller=self.caller, location=self.location, description=self.description,
            is_emergency=self.is_emergency, server_id=self.server_id,
            metadata=dict(self.metadata), delete_after_minutes=self.delete_after_minutes,
            id=call_id, idempotency_key=self.idempotency_key, enqueued_at=enqueued_at,
            extra=self.extra,
        )

    def to_cad(self, default_server_id: str | int | None = None) -> dict[str, Any]:
        """The call object exactly as the seed sends it in ``data`` (no credentials)."""
        body: dict[str, Any] = {}
        server_id = self.server_id if self.server_id is not None else default_server_id
        if server_id is not None:
            body["serverId"] = server_id
        body["isEmergency"] = self.is_emergency
        body["caller"] = self.caller
        body["location"] = self.location
        body["description"] = self.description
        body["metaData"] = dict(self.metadata)
        if self.delete_after_minutes is not None:
            body["deleteAfterMinutes"] = self.delete_after_minutes
        for name, value in self.extra.items():  # known fields win over an extra
            body.setdefault(name, value)
        return body

    def as_sent(self, now: float, default_server_id: str | int | None = None) -> dict[str, Any]:
        """The call object as the CAD gets it: tagged with our id and the time it was made,
        its deleteAfterMinutes counted from then (not from the send)."""
        body = self.to_cad(default_server_id)
        meta = body["metaData"]
        if self.id:
            meta[TAG_ID] = self.id
        if self.enqueued_at > 0:
            meta[TAG_QUEUED_AT] = iso_utc(self.enqueued_at)
            minutes = self.delete_after_minutes
            if minutes:  # 0 (or none) is the CAD's own default: nothing to count
                left = math.ceil(minutes - max(0.0, now - self.enqueued_at) / 60.0)
                if left < 1:
                    left = 1
                    meta[TAG_DELETE_AFTER_PASSED] = "true"
                body["deleteAfterMinutes"] = left
        return body

    def to_dict(self) -> dict[str, Any]:
        """The envelope as the spool keeps it while Redis is away (`Producer`)."""
        return {
            "v": SCHEMA_VERSION,
            "id": self.id,
            "call": self.to_cad(),
            "idempotency_key": self.idempotency_key,
            "enqueued_at": self.enqueued_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Call:
        """Inverse of `to_dict`; validates again, so a tampered record cannot slip through."""
        version = data.get("v")
        if version != SCHEMA_VERSION:
            raise InvalidCall(f"unsupported call schema version {version!r}", "v")
        parsed = cls.parse(data.get("call"))
        return Call(
            caller=parsed.caller, location=parsed.location, description=parsed.description,
            is_emergency=parsed.is_emergency, server_id=parsed.server_id,
            metadata=parsed.metadata, delete_after_minutes=parsed.delete_after_minutes,
            id=str(data.get("id") or ""),
            idempotency_key=data.get("idempotency_key"),
            enqueued_at=float(data.get("enqueued_at") or 0.0),
            extra=parsed.extra,
        )

    def summary(self) -> str:
        """A short human line: caller @ location."""
        return f"{self.caller} @ {self.location}"


def iso_utc(ts: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds and a ``Z``."""
    text = datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


#: The characters `_clean` refuses: controls other than tab/newline/CR, and surrogates.
_UNCLEAN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def _clean(value: str, name: str) -> str:
    # Control characters other than tab/newline have no place in a 911 call and some
    # (NUL) break downstream systems; reject rather than silently strip. (One regex
    # search: a loop over the characters cost more than the rest of the call's checks.)
    found = _UNCLEAN.search(value)
    if found is None:
        return value
    code = ord(found.group())
    if code < 32:
        raise InvalidCall(f"{name} contains a control character (code {code})", name)
    raise InvalidCall(f"{name} contains an unpaired surrogate (not valid Unicode)", name)


def _text(value: Any, name: str, limit: int) -> str:
    if value is None:
        raise InvalidCall(f"{name} is required", name)
    if not isinstance(value, str):
        raise InvalidCall(f"{name} must be a string, got {_json_type(value)}", name)
    if not value.strip():
        raise InvalidCall(f"{name} must not be empty", name)
    if len(value) > limit:
        raise InvalidCall(f"{name} is {len(value)} characters, more than {limit}", name)
    return _clean(value, name)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidCall(f"{name} must be true or false, got {_json_type(value)}", name)
    return value


def _server_id(value: Any) -> str | int | None:
    # The official resource sends "1" (a string); the docs say integer. Keep what was given.
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidCall("serverId must be an integer or a string, got a boolean", "serverId")
    if isinstance(value, int):
        if value < 0 or value > 2**31 - 1:
            raise InvalidCall("serverId must be between 0 and 2147483647", "serverId")
        return value
    if isinstance(value, str):
        if not value.strip() or len(value) > MAX_SERVER_ID:
            raise InvalidCall(f"serverId must be 1 to {MAX_SERVER_ID} characters", "serverId")
        return _clean(value, "serverId")
    raise InvalidCall(
        f"serverId must be an integer or a string, got {_json_type(value)}", "serverId"
    )


def _delete_after(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidCall(
            f"deleteAfterMinutes must be an integer, got {_json_type(value)}", "deleteAfterMinutes"
        )
    if not 0 <= value <= MAX_DELETE_AFTER_MINUTES:
        raise InvalidCall(
            f"deleteAfterMinutes must be between 0 and {MAX_DELETE_AFTER_MINUTES}",
            "deleteAfterMinutes",
        )
    return value


def _idempotency_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidCall("idempotencyKey must be a non-empty string", "idempotencyKey")
    if len(value) > MAX_IDEMPOTENCY_KEY:
        raise InvalidCall(
            f"idempotencyKey is longer than {MAX_IDEMPOTENCY_KEY} characters", "idempotencyKey"
        )
    return _clean(value, "idempotencyKey")


def _check_meta(meta: dict[str, Any]) -> None:
    if len(meta) > MAX_META_KEYS:
        raise InvalidCall(f"metaData has {len(meta)} keys, more than {MAX_META_KEYS}", "metaData")
    for key in list(meta):
        if not isinstance(key, str) or not key or len(key) > MAX_META_KEY:
            raise InvalidCall(f"metaData keys must be 1 to {MAX_META_KEY} characters", "metaData")
    # postal and plate are strings in practice ("2000", "7015a"); the seed's table says
    # postal is an integer, so a number is accepted and sent as its text.
    for name, limit in (("postal", MAX_POSTAL), ("plate", MAX_PLATE)):
        value = meta.get(name)
        if value is None:
            meta.pop(name, None)
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise InvalidCall(f"{name} must be a string, got {_json_type(value)}", name)
        if len(value) > limit:
            raise InvalidCall(f"{name} is longer than {limit} characters", name)
        meta[name] = _clean(value, name)
    try:
        json.dumps(meta, allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError, RecursionError):
        raise InvalidCall(
            "metaData values must be plain JSON values (valid Unicode, finite numbers, "
            "not nested too deep)", "metaData",
        ) from None
