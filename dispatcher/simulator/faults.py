"""The faults the fake CAD can be switched into, and the answer (or non-answer) each gives.

It can refuse connections, reset them, hang, answer slowly, answer 5xx/429/HTML/empty,
reject permanently, or create the call and then drop the connection. Faults apply to
every request on the API port, whatever its path, as a failing proxy in front of the CAD
would (our assumption). "refuse" closes the API port instead, so the simulator itself
handles it; "slow" and "commit_then_drop" wrap normal handling rather than replace it.
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dispatcher.simulator.answers import (
    HTML,
    Outcome,
    answer_problem,
    answer_text,
    answer_too_many,
    proxy_page,
    retry_after_value,
)
from dispatcher.simulator.api import Request

FAULT_KINDS = frozenset(
    {
        "refuse",
        "reset",
        "error",
        "ratelimit",
        "hang",
        "slow",
        "reject",
        "commit_then_drop",
        "html200",
        "empty",
    }
)

_CAPTIVE_PORTAL = (
    "<!DOCTYPE html>\n<html><head><title>Network Login</title></head>"
    '<body><h1>Sign in to continue</h1><form method="post" action="/login">'
    '<input name="user"><input name="password" type="password"></form></body></html>\n'
)


@dataclass
class Fault:
    """The active fault: what to do and for how many more requests."""

    kind: str
    remaining: int | None
    params: dict[str, Any]


def check_fault(kind: str, count: int | None, params: dict[str, Any]) -> None:
    """Reject an unknown kind, a bad count, or parameters that would only fail later."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
    if count is not None:
        if kind == "refuse":
            raise ValueError("'refuse' lasts until cleared; it takes no count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive integer or None")
    _check_fault_params(params)


def _check_fault_params(params: dict[str, Any]) -> None:
    """Reject fault parameters that would only fail later, inside a handler thread."""
    for name in ("status", "ms", "max_s"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{name} must be a number")
    status = params.get("status")
    if status is not None and not 100 <= status <= 599:
        raise ValueError("status must be between 100 and 599")
    retry_after = params.get("retry_after")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int | float | str)
    ):
        raise ValueError("retry_after must be a number of seconds, an HTTP-date or None")


def fault_answer(req: Request, fault: Fault) -> Outcome:
    """Build the answer (or non-answer) of a fault that replaces normal handling."""
    params = fault.params
    if fault.kind == "reset":
        return Outcome(action="rst")
    if fault.kind == "hang":
        return Outcome(action="hang", hang_s=float(params.get("max_s", 3600)))
    if fault.kind == "error":
        status = int(params.get("status", 503))
        body = params.get("body")
        page = proxy_page(status) if body is None else str(body).encode()
        return Outcome(status, page, str(params.get("content_type", HTML)))
    if fault.kind == "ratelimit":
        retry_after = params.get("retry_after")
        shown = None if retry_after is None else retry_after_value(retry_after)
        return answer_too_many(req.version, shown, None)
    if fault.kind == "reject":
        if req.version == 2:
            status = int(params.get("status", 404))
            detail = str(params.get("detail", "API is not enabled for this community"))
            return answer_problem(status, detail, urlsplit(req.target).path)
        return answer_text(400, str(params.get("text", "API IS NOT ENABLED FOR THIS COMMUNITY")))
    if fault.kind == "html200":
        return Outcome(200, str(params.get("body", _CAPTIVE_PORTAL)).encode(), HTML)
    # The only kind left is "empty".
    return Outcome(int(params.get("status", 502)))
