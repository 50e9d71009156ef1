"""The members of a call object we do not know: kept, bounded, and sent as they came.

A door must not lose what a caller meant the CAD to get: the official FiveM resource
adds top-level members (``coords``), older versions send ``deleteAfter``, and scripts
add their own. `checked_extra` keeps them after bounding their number and names (the
same bounds as metaData keys); their values are any plain JSON and count towards the
call's size (`dispatcher.call.MAX_CALL_BYTES`). `renamed` maps the older
``deleteAfter`` onto ``deleteAfterMinutes`` exactly as the official resource's
``normalize_emergency_call_payload`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dispatcher.errors import InvalidCall

#: Most extra (unknown) members one call may carry.
MAX_EXTRA_FIELDS = 50
#: Longest name of an extra member (as a metaData key).
MAX_EXTRA_NAME = 64
#: The older official resource's name of ``deleteAfterMinutes``.
LEGACY_DELETE_AFTER = "deleteAfter"


def renamed(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """``obj`` with ``deleteAfter`` moved to ``deleteAfterMinutes`` (unless that is given
    too: then it wins); ``deleteAfter`` itself is dropped, as the official resource does."""
    if LEGACY_DELETE_AFTER not in obj:
        return obj
    out = {k: v for k, v in obj.items() if k != LEGACY_DELETE_AFTER}
    if out.get("deleteAfterMinutes") is None:
        out["deleteAfterMinutes"] = obj[LEGACY_DELETE_AFTER]
    return out


def checked_extra(extra: dict[str, Any]) -> Mapping[str, Any]:
    """The unknown members, checked: at most MAX_EXTRA_FIELDS, names 1..MAX_EXTRA_NAME
    characters without control characters, values plain JSON."""
    if len(extra) > MAX_EXTRA_FIELDS:
        raise InvalidCall(
            f"the call has {len(extra)} unknown fields, more than {MAX_EXTRA_FIELDS}"
        )
    for name in sorted(extra, key=str):
        if not isinstance(name, str) or not name or len(name) > MAX_EXTRA_NAME:
            raise InvalidCall(f"unknown field names must be 1 to {MAX_EXTRA_NAME} characters")
        if any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in name):
            raise InvalidCall("an unknown field's name contains a control character or an "
                              "unpaired surrogate")
        try:
            json.dumps(extra[name], allow_nan=False, ensure_ascii=False).encode()
        except (TypeError, ValueError, RecursionError):
            raise InvalidCall(
                f"{name} must be a plain JSON value (valid Unicode, finite numbers, "
                "not nested too deep)", name,
            ) from None
    return extra
