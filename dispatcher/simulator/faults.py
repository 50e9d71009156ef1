"""The faults the fake CAD can be switched into, and the answer (or non-answer) each gives.

It can refuse connections, reset them, hang, answer slowly, answer 5xx/429/HTML/empty,
reject permanently, or create the call and then lose the answer (drop the connection, or
hang without answering). Without a route a fault applies to every request on the API
port, whatever its path, as a failing proxy in front of the CAD would (our assumption);
with a route ("create", "read", "remove", "other") it applies to, and is only used up
by, requests of that route. "refuse" closes the whole API port instead, so the simulator
itself handles it and it takes no route; "slow" and the commit faults wrap normal
handling rather than replace it, the commit faults only on the create route: on a route
that creates nothing they reset or hang without handling the request.
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
from dispatcher.simulator.api import ROUTES, Request

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
        "commit_then_hang",
        "html200",
        "empty",
    }
)

# The faults that let the create route create the call, then lose the answer.
_COMMITS = ("commit_then_drop", "commit_then_hang")

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
    route: str | None = None  # None: every request

    def covers(self, route: str) -> bool:
        """Tell whether the fault applies to a request of this route."""
        return self.route is None or self.route == route

    def wraps(self, route: str) -> bool:
        """Tell whether a request of this route is still handled under the fault."""
        return self.kind == "slow" or (self.kind in _COMMITS and route == "create")


def check_fault(kind: str, count: int | None, params: dict[str, Any], route: str | None) -> None:
    """Reject an unknown kind or route, a bad count, or parameters that would only fail later."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
    if route is not None:
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {list(ROUTES)}")
        if kind == "refuse":
            raise ValueError("'refuse' closes the whole API port; it takes no route")
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


def lose_answer(outcome: Outcome, fault: Fault | None) -> Outcome:
    """Turn a handled request's answer into a commit fault's dropped or hung connection."""
    if fault is not None and fault.kind == "commit_then_drop":
        outcome.action = "rst"
    elif fault is not None and fault.kind == "commit_then_hang":
        outcome.action, outcome.hang_s = "hang", hang_outcome(fault).hang_s
    return outcome


def hang_outcome(fault: Fault) -> Outcome:
    """Hang until the client leaves, max_s passes (an hour by default) or the fault ends."""
    return Outcome(action="hang", hang_s=float(fault.params.get("max_s", 3600)))


def fault_answer(req: Request, fault: Fault) -> Outcome:
    """Build the answer (or non-answer) of a fault that replaces normal handling."""
    params = fault.params
    if fault.kind in ("reset", "commit_then_drop"):
        return Outcome(action="rst")
    if fault.kind in ("hang", "commit_then_hang"):
        return hang_outcome(fault)
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
