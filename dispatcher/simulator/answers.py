"""How the fake CAD finishes a request: the Outcome, and the bodies it answers with.

v1 answers plain text, v2 answers JSON and RFC 7807 problems; 429 and 5xx pages that a
reverse proxy in front of the CAD would show are nginx's HTML.
"""

import json
import math
import secrets
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
JSON = "application/json; charset=utf-8"
PROBLEM = "application/problem+json"
# nginx's wording, which is what a proxy in front of the CAD would most likely show.
_NGINX_PHRASES = {503: "Service Temporarily Unavailable"}


@dataclass
class Outcome:
    """How to finish a request: answer it, reset the connection, or hang."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    action: Literal["answer", "rst", "hang"] = "answer"
    hang_s: float = 0.0


def phrase(status: int) -> str:
    """Return the reason phrase for a status, or an empty string for unknown codes."""
    if status in _NGINX_PHRASES:
        return _NGINX_PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def answer_text(status: int, text: str) -> Outcome:
    """Build a plain-text answer, as v1 gives."""
    return Outcome(status, text.encode(), TEXT)


def answer_json(status: int, payload: Any, content_type: str = JSON) -> Outcome:
    """Build a JSON answer."""
    return Outcome(status, json.dumps(payload).encode(), content_type)


def proxy_page(status: int) -> bytes:
    """Return the HTML error page a reverse proxy shows for a status."""
    title = f"{status} {phrase(status)}".strip()
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def answer_problem(status: int, detail: str, instance: str) -> Outcome:
    """Build an RFC 7807 problem answer, as v2 gives for its errors."""
    payload = {
        "type": "about:blank",
        "title": phrase(status),
        "status": status,
        "detail": detail,
        "instance": instance,
        "traceId": secrets.token_hex(16),
    }
    return answer_json(status, payload, PROBLEM)


def retry_after_value(value: Any) -> str:
    """Render Retry-After: numbers as whole seconds rounded up, strings (HTTP-dates) as is."""
    if isinstance(value, str):
        return value
    return str(max(0, math.ceil(float(value))))


def answer_too_many(version: int | None, retry_after: str | None, frees_in: int | None) -> Outcome:
    """Build a 429: the documented JSON for v2, a proxy's HTML page for v1."""
    if version == 2:
        outcome = answer_json(429, {"message": "API rate limit exceeded", "status": 429})
        reset = frees_in if frees_in is not None else retry_after
        if reset is not None:
            outcome.headers["RateLimit-Reset"] = str(reset)
    else:
        outcome = Outcome(429, proxy_page(429), HTML)
    if retry_after is not None:
        outcome.headers["Retry-After"] = retry_after
    return outcome
