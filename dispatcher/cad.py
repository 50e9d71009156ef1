"""The CAD client: the one place that talks HTTP to Sonoran CAD.

It sends one call and returns `Delivered`, or raises `RetryableError` (network error,
timeout, 5xx, 408, 429 as `RateLimited`) or `PermanentError` (400 and other 4xx, a
redirect). Every ``requests`` exception is translated here; callers never see one.
Answers are read with a size cap and a total deadline, so a CAD that drips bytes or
answers a huge HTML page cannot hold a worker. The API key is redacted from anything
kept from an answer, in case a proxy echoes the request.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

from dispatcher.call import Call
from dispatcher.errors import PermanentError, RateLimited, RetryableError
from dispatcher.redact import Redactor
from dispatcher.settings import Settings

#: Most bytes of an answer we read; the real answers are a line of text or small JSON.
MAX_ANSWER_BYTES = 64 * 1024
#: Most characters of an answer kept in a record (dead letter, last error).
KEPT_ANSWER_CHARS = 2000
#: The seed's success text; the id is parsed tolerantly (``ID:? *(\d+)``).
_V1_ID = re.compile(r"ID:? *(\d+)")
_V1_OK = "EMERGENCY CALL ADDED"
#: Longest Retry-After we believe; a bigger value is clamped (a typo must not stall us a day).
MAX_RETRY_AFTER_S = 3600.0


@dataclass(frozen=True)
class Delivered:
    """The CAD accepted the call."""

    cad_call_id: str | None
    status_code: int
    response: str
    elapsed_s: float


class CadClient:
    """Sends calls to the CAD, v1 or v2 as configured; one Session per thread."""

    def __init__(
        self,
        settings: Settings,
        session_factory: Callable[[], requests.Session] = requests.Session,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings.require_credentials()
        self._settings = settings
        self._session_factory = session_factory
        self._clock = clock
        self._local = threading.local()
        self._key = settings.api_key.reveal() if settings.api_key else ""
        self._redactor = Redactor.from_settings(settings)  # the key, and every other secret

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            session.headers["User-Agent"] = "sonoran-dispatcher/0.1"
            self._local.session = session
        return session

    def request_for(self, call: Call) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and body for one call (the body holds the key in v1)."""
        s = self._settings
        if s.api_version == 2:
            server_id = call.server_id if call.server_id is not None else s.server_id
            body = call.to_cad()
            body.pop("serverId", None)
            body.pop("deleteAfterMinutes", None)
            body["metaData"] = {k: _v2_meta(v) for k, v in body["metaData"].items()}
            url = f"{s.api_url}/v2/emergency/servers/{quote(str(server_id), safe='')}/calls/911"
            headers = {"Authorization": f"Bearer {self._key}"}
            return url, {**headers, "Content-Type": "application/json"}, _dumps(body)
        envelope = {
            "id": s.community_id,
            "key": self._key,
            "type": "CALL_911",
            "data": [call.to_cad(s.server_id)],
        }
        url = f"{s.api_url}/emergency/call_911"
        return url, {"Content-Type": "application/json"}, _dumps(envelope)

    def send(self, call: Call) -> Delivered:
        """POST one call; return Delivered or raise a DeliveryError subclass."""
        url, headers, body = self.request_for(call)
        started = self._clock()
        deadline = started + self._settings.request_deadline_s
        try:
            response = self._session().post(
                url,
                data=body,
                headers=headers,
                timeout=(self._settings.connect_timeout_s, self._settings.read_timeout_s),
                allow_redirects=False,
                stream=True,
            )
            try:
                text = self._read(response, deadline)
            finally:
                response.close()
        except requests.Timeout as exc:
            raise RetryableError(f"timeout talking to the CAD ({_kind(exc)})") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            raise RetryableError(f"network error talking to the CAD ({_kind(exc)})") from None
        except requests.RequestException as exc:
            raise RetryableError(f"HTTP error talking to the CAD ({_kind(exc)})") from None
        return self._classify(response, self._redact(text), self._clock() - started)

    def _read(self, response: requests.Response, deadline: float) -> str:
        # read1 returns whatever arrived (up to the size), so a CAD that drips bytes is
        # checked against the deadline between reads instead of filling a whole chunk.
        chunks: list[bytes] = []
        size = 0
        raw = response.raw
        while size < MAX_ANSWER_BYTES:
            if self._clock() > deadline:
                raise requests.Timeout("answer took longer than the request deadline")
            try:
                chunk = raw.read1(8192, decode_content=True)
            except Exception as exc:  # urllib3 errors: translate like requests would
                raise requests.ConnectionError(type(exc).__name__) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)[:MAX_ANSWER_BYTES]
        return body.decode(response.encoding or "utf-8", errors="replace")

    def _redact(self, text: str) -> str:
        return self._redactor(text)

    def _classify(self, response: requests.Response, text: str, elapsed: float) -> Delivered:
        status = response.status_code
        kept = _keep(text)
        if 200 <= status < 300:
            if self._settings.api_version == 2:
                if _is_json_object(text):
                    return Delivered(_v2_call_id(text), status, kept, elapsed)
            elif _V1_OK in text.upper():
                match = _V1_ID.search(text)
                return Delivered(match.group(1) if match else None, status, kept, elapsed)
            # A 200 that is not the CAD's answer (a captive portal, a proxy page) means the
            # request never reached the CAD: retrying is right.
            raise RetryableError(
                f"unexpected {status} answer from the CAD: {_first_line(text)}",
                status_code=status, response=kept,
            )
        if status == 429:
            raise RateLimited(
                "rate limited by the CAD (429)", status_code=status, response=kept,
                retry_after=retry_after_seconds(response.headers),
            )
        if status == 408 or status >= 500:
            raise RetryableError(
                f"the CAD answered {status}: {_first_line(text)}",
                status_code=status, response=kept,
                retry_after=retry_after_seconds(response.headers),
            )
        if 300 <= status < 400:
            # A proxy may echo the request (key and all) in where it points.
            where = self._redact(response.headers.get("Location", "?"))
            raise PermanentError(
                f"the CAD answered a redirect {status} to {where}: check SONORAN_API_URL",
                status_code=status, response=kept,
            )
        raise PermanentError(
            f"the CAD rejected the call ({status}): {_problem_text(text)}",
            status_code=status, response=kept,
        )


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait from Retry-After (seconds or HTTP date) or RateLimit-Reset headers."""
    for name in ("Retry-After", "RateLimit-Reset", "X-RateLimit-Reset"):
        raw = headers.get(name)
        if raw is None:
            continue
        raw = str(raw).strip()
        try:
            value = float(raw)
        except ValueError:
            try:
                when = parsedate_to_datetime(raw).timestamp()
            except (TypeError, ValueError, IndexError):
                continue
            value = when - (time.time() if now is None else now)
        else:
            # X-RateLimit-Reset is sometimes an epoch timestamp rather than a delay.
            if value > 1_000_000_000:
                value -= time.time() if now is None else now
        if not math.isfinite(value):
            continue
        return min(max(value, 0.0), MAX_RETRY_AFTER_S)
    return None


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _v2_meta(value: Any) -> str:
    # v2 takes metaData as string key/values.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _v2_call_id(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("callId") is not None:
        return str(data["callId"])
    return None


def _problem_text(text: str) -> str:
    """The title/detail of a problem+json answer, or the first line of plain text."""
    try:
        data = json.loads(text)
    except ValueError:
        return _first_line(text)
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("title", "detail", "message") if data.get(k)]
        if parts:
            return ": ".join(parts)[:200]
    return _first_line(text)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "(empty body)"
    return line[:200]


def _keep(text: str) -> str:
    return text[:KEPT_ANSWER_CHARS]


def _kind(exc: Exception) -> str:
    # The class name says what happened without echoing URLs or bodies that could carry data.
    return type(exc).__name__
