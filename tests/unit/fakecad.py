"""A requests-like fake of the CAD for `CadClient` unit tests: canned answers, no network.

`FakeSession.post` records what the client sent and returns (or raises) the next
queued answer; `FakeResponse.raw.read1` hands the body out in chunks and can advance a
`FakeClock` per read, so a CAD that drips its answer costs no real time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from requests.structures import CaseInsensitiveDict

COMMUNITY = "test-community"
API_KEY = "sk-test-SECRET-0123456789abcdef"
FIRST_CALL_ID = 10001
HTML = "text/html"


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeRaw:
    """urllib3's response stream as CadClient reads it (`read1`)."""

    def __init__(self, body: bytes, chunk: int = 8192, on_read: Callable[[], None] | None = None,
                 fail: Exception | None = None) -> None:
        self._body = body
        self._chunk = chunk
        self._on_read = on_read
        self._fail = fail
        self.reads = 0

    def read1(self, size: int = -1, decode_content: bool = True) -> bytes:
        self.reads += 1
        if self._on_read is not None:
            self._on_read()
        if self._fail is not None:
            raise self._fail
        n = min(size, self._chunk)
        piece, self._body = self._body[:n], self._body[n:]
        return piece


class FakeResponse:
    """A streamed `requests.Response` with a status, headers and a body."""

    def __init__(self, status: int, body: str | bytes = "", content_type: str = "text/plain",
                 headers: dict[str, str] | None = None, raw: FakeRaw | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.status_code = status
        self.headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(
            {"Content-Type": content_type, **(headers or {})})
        self.encoding = "utf-8"
        self.raw = raw if raw is not None else FakeRaw(data)
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeSession:
    """Answers each request with the next queued answer (a response, or an exception to
    raise); ``posts`` keeps every request (its ``method`` too)."""

    def __init__(self, *answers: FakeResponse | Exception) -> None:
        self.answers = list(answers)
        self.headers: dict[str, str] = {}
        self.posts: list[dict[str, Any]] = []

    def queue(self, *answers: FakeResponse | Exception) -> None:
        self.answers.extend(answers)

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        return self.request("POST", url, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        self.posts.append({"method": method, "url": url, **kwargs})
        answer = self.answers.pop(0) if self.answers else v1_added()
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def last_body(self) -> Any:
        return json.loads(self.posts[-1]["data"])


# -- the CAD's own answers ----------------------------------------------------------------

def v1_added(*ids: int) -> FakeResponse:
    shown = ",".join(str(i) for i in (ids or (FIRST_CALL_ID,)))
    return FakeResponse(200, f"EMERGENCY CALL ADDED ID: {shown}")


def v2_created(call_id: int = FIRST_CALL_ID, server_id: str = "1") -> FakeResponse:
    body = {"callId": call_id, "serverId": server_id, "createdAt": "2026-01-01T00:00:00Z"}
    return FakeResponse(200, json.dumps(body), "application/json")


def text(status: int, body: str) -> FakeResponse:
    return FakeResponse(status, body)


def proxy_page(status: int, headers: dict[str, str] | None = None) -> FakeResponse:
    """The HTML page an nginx in front of the CAD shows for a 429 or 5xx."""
    return FakeResponse(status, f"<html><head><title>{status}</title></head><body>"
                        f"<center><h1>{status}</h1></center><hr><center>nginx</center>"
                        "</body></html>", HTML, headers)


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None
            ) -> FakeResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "traceId": "abc123"}
    return FakeResponse(status, json.dumps(body), "application/problem+json", headers)


def v2_too_many(headers: dict[str, str] | None = None) -> FakeResponse:
    return FakeResponse(429, json.dumps({"message": "API rate limit exceeded", "status": 429}),
                        "application/json", headers)
