"""The CAD client: the one place that talks HTTP to Sonoran CAD.

It sends one call and returns `Delivered`, or raises `RetryableError` (network error,
timeout, 5xx, 408, 429 as `RateLimited`) or `PermanentError` (400 and other 4xx, a
redirect). A failure after the request was written (a read timeout, a connection cut
while waiting for the answer, a 502/504 from a proxy) is `Ambiguous`: the CAD may have
created the call, so it is checked in the CAD's list (`read_calls`) before any re-send.
A refused connect or a connect timeout is not ambiguous: nothing reached the CAD.
Every ``requests`` exception is translated here; callers never see one.
Answers are read with a size cap and a total deadline, so a CAD that drips bytes or
answers a huge HTML page cannot hold a worker. The API key is redacted from anything
kept from an answer, in case a proxy echoes the request.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from dispatcher import clock as shared_clock
from dispatcher.call import Call
from dispatcher.errors import Ambiguous, PermanentError, RateLimited, RetryableError
from dispatcher.redact import Redactor
from dispatcher.settings import Settings

log = logging.getLogger("dispatcher.cad")

#: Most bytes of an answer we read; the real answers are a line of text or small JSON.
MAX_ANSWER_BYTES = 64 * 1024
#: Most bytes of a call list (read-back) we read: a listed call is about 250 bytes, so a
#: server with thousands of active calls still fits. Cut short, the list could not be
#: parsed and no verifying call would ever settle.
MAX_LIST_BYTES = 8 * 1024 * 1024
#: Most characters of an answer kept in a record (dead letter, last error).
KEPT_ANSWER_CHARS = 2000
#: The seed's success text; the id is parsed tolerantly (``ID:? *(\d+)``).
_V1_ID = re.compile(r"ID:? *(\d+)")
_V1_OK = "EMERGENCY CALL ADDED"
#: Longest Retry-After we believe; a bigger value is clamped (a typo must not stall us a day).
MAX_RETRY_AFTER_S = 3600.0
#: Answers of a proxy whose upstream took the request and then failed or timed out: the
#: CAD may have acted on it.
AMBIGUOUS_STATUS = frozenset({502, 504})


#: What a thread calls once its request's bytes are written (`CadClient.send`'s
#: ``on_written``): the rate limiter's departure report.
_written = threading.local()


def _tell_written() -> None:
    callback = getattr(_written, "callback", None)
    if callback is not None:
        _written.callback = None
        try:
            callback()
        except Exception:  # the request is out: its answer still has to be read
            log.debug("the departure callback failed", exc_info=True)


class _Written:
    """Mixed into urllib3's connections: says so once a request's bytes are written."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)  # type: ignore[misc]
        _tell_written()


class _HTTPConnection(_Written, HTTPConnection):
    pass


class _HTTPSConnection(_Written, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _WrittenAdapter(HTTPAdapter):
    """requests' adapter, whose connections say when a request is written (no proxy: a
    proxied request is reported when its answer came, later than it left)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _environment_once(session: requests.Session, url: str) -> None:
    """Read the environment's proxy and CA bundle settings for the CAD's URL once, when the
    session is made, instead of on every request (requests does that with ``trust_env``:
    proxies, ``no_proxy``, the CA bundle and a ``~/.netrc`` lookup, ~0.2 ms of CPU per
    request, docs/PERFORMANCE.md). ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` and
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` still apply; a ``.netrc`` login is not sent
    to the CAD (its key is the credential)."""
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


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
        wall: Callable[[], float] = shared_clock.now,
    ) -> None:
        settings.require_credentials()
        self._settings = settings
        self._session_factory = session_factory
        self._clock = clock
        self._wall = wall
        self._local = threading.local()
        self._key = settings.api_key.reveal() if settings.api_key else ""
        self._redactor = Redactor.from_settings(settings)  # the key, and every other secret

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            session.headers["User-Agent"] = "sonoran-dispatcher/0.1"
            if type(session) is requests.Session:
                session.mount("https://", _WrittenAdapter())
                session.mount("http://", _WrittenAdapter())
                _environment_once(session, self._settings.api_url)
            self._local.session = session
        return session

    def server_id(self, call_server: str | int | None) -> str:
        """The server id a call goes to (its own, else SONORAN_SERVER_ID), as text."""
        return str(call_server if call_server is not None else self._settings.server_id)

    def request_for(self, call: Call) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and body for one call (the body holds the key in v1)."""
        s = self._settings
        if s.api_version == 2:
            body = call.as_sent(self._wall())
            body.pop("serverId", None)
            body["metaData"] = {k: _v2_meta(v) for k, v in body["metaData"].items()}
            url = f"{self._v2_server(call.server_id)}/calls/911"
            return url, self._v2_headers(), _dumps(body)
        url = f"{s.api_url}/emergency/call_911"
        return url, _JSON, self._v1_body("CALL_911", [call.as_sent(self._wall(), s.server_id)])

    def _v2_server(self, server: str | int | None) -> str:
        sid = quote(self.server_id(server), safe="")
        return f"{self._settings.api_url}/v2/emergency/servers/{sid}"

    def _v2_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}", **_JSON}

    def _v1_body(self, kind: str, data: list[dict[str, Any]]) -> bytes:
        s = self._settings
        return _dumps({"id": s.community_id, "key": self._key, "type": kind, "data": data})

    def send(self, call: Call, on_written: Callable[[], None] | None = None) -> Delivered:
        """POST one call; return Delivered or raise a DeliveryError subclass.

        ``on_written``: called (in this thread) as soon as the request's bytes are
        written, before the answer is read; not called when nothing was written, nor
        through a proxy or a session of a test's own."""
        url, headers, body = self.request_for(call)
        response, text, elapsed = self._exchange("POST", url, headers, body,
                                                 on_written=on_written)
        return self._classify(response, text, elapsed)

    def remove(self, call: Call, cad_call_id: str,
               on_written: Callable[[], None] | None = None) -> Delivered:
        """Remove a call we delivered from the CAD (v1 REMOVE_911, v2 DELETE). Any 2xx is
        done (v1's success text is not reliably documented); on v2 a 404 means the call is
        gone already (a dispatcher cleared it), which is what we wanted too."""
        if self._settings.api_version == 2:
            url = f"{self._v2_server(call.server_id)}/calls/911/{quote(cad_call_id, safe='')}"
            response, text, elapsed = self._exchange("DELETE", url, self._v2_headers(), None,
                                                     on_written=on_written)
            gone = response.status_code == 404
        else:
            item = {"serverId": _number_if_digits(self.server_id(call.server_id)),
                    "callId": _number_if_digits(cad_call_id)}
            url = f"{self._settings.api_url}/emergency/remove_911"
            response, text, elapsed = self._exchange("POST", url, _JSON,
                                                     self._v1_body("REMOVE_911", [item]),
                                                     on_written=on_written)
            gone = False
        if 200 <= response.status_code < 300 or gone:
            return Delivered(cad_call_id, response.status_code, _keep(text), elapsed)
        raise self._failure(response, _keep(text), "the removal")

    def read_calls(self, server: str | int | None) -> list[dict[str, Any]]:
        """The CAD's current emergency (911) calls of one server: v1 GET_CALLS, v2
        ``GET .../calls?type=1``. Raises like `send`: a permanent refusal (v1 without the
        Plus plan) is a `PermanentError`, which the read-back takes as "unavailable"."""
        if self._settings.api_version == 2:
            url = f"{self._v2_server(server)}/calls?closedLimit=0&closedOffset=0&type=1"
            response, text, _ = self._exchange("GET", url, self._v2_headers(), None,
                                               MAX_LIST_BYTES)
        else:
            query = {"serverId": _number_if_digits(self.server_id(server)), "closedLimit": 0,
                     "closedOffset": 0, "type": 1}
            url = f"{self._settings.api_url}/emergency/get_calls"
            response, text, _ = self._exchange("POST", url, _JSON,
                                               self._v1_body("GET_CALLS", [query]),
                                               MAX_LIST_BYTES)
        status = response.status_code
        if 200 <= status < 300:
            calls = _emergency_calls(text)
            if calls is None:
                raise RetryableError(f"unexpected {status} answer to the call list: "
                                     f"{_first_line(text)}", status_code=status,
                                     response=_keep(text))
            return calls
        raise self._failure(response, _keep(text), "the call list")

    def _exchange(self, method: str, url: str, headers: dict[str, str],
                  body: bytes | None, cap: int = MAX_ANSWER_BYTES,
                  on_written: Callable[[], None] | None = None,
                  ) -> tuple[requests.Response, str, float]:
        """One request: the response, its text (read with a cap and a deadline, redacted)
        and how long it took. A failure once the request was written is `Ambiguous`."""
        started = self._clock()
        deadline = started + self._settings.request_deadline_s
        _written.callback = on_written
        try:
            response = self._session().request(
                method, url, data=body, headers=headers,
                timeout=(self._settings.connect_timeout_s, self._settings.read_timeout_s),
                allow_redirects=False, stream=True,
            )
            try:
                text = self._read(response, deadline, cap)
            finally:
                response.close()
        except requests.ConnectTimeout as exc:
            raise RetryableError(f"timeout connecting to the CAD ({_kind(exc)})") from None
        except requests.Timeout as exc:
            raise Ambiguous(f"no answer from the CAD in time ({_kind(exc)})") from None
        except (requests.exceptions.SSLError, requests.exceptions.ProxyError) as exc:
            raise RetryableError(f"could not connect to the CAD ({_kind(exc)})") from None
        except requests.ConnectionError as exc:
            if _never_connected(exc):
                raise RetryableError(
                    f"could not connect to the CAD ({_kind(exc)})") from None
            raise Ambiguous(
                f"connection lost waiting for the CAD's answer ({_kind(exc)})") from None
        except (requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            raise Ambiguous(f"the CAD's answer was cut off ({_kind(exc)})") from None
        except requests.RequestException as exc:
            raise RetryableError(f"HTTP error talking to the CAD ({_kind(exc)})") from None
        finally:
            _written.callback = None
        return response, self._redact(text), self._clock() - started

    def _read(self, response: requests.Response, deadline: float,
              cap: int = MAX_ANSWER_BYTES) -> str:
        # read1 returns whatever arrived (up to the size), so a CAD that drips bytes is
        # checked against the deadline between reads instead of filling a whole chunk.
        chunks: list[bytes] = []
        size = 0
        raw = response.raw
        while size < cap:
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
        body = b"".join(chunks)[:cap]
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
        raise self._failure(response, kept, "the call")

    def _failure(self, response: requests.Response, kept: str,
                 what: str) -> RetryableError | PermanentError:
        """The error of a non-2xx answer to a request about ``what``."""
        status = response.status_code
        if status == 429:
            return RateLimited(
                "rate limited by the CAD (429)", status_code=status, response=kept,
                retry_after=retry_after_seconds(response.headers),
            )
        if status == 408 or status >= 500:
            kind = Ambiguous if status in AMBIGUOUS_STATUS else RetryableError
            return kind(
                f"the CAD answered {status}: {_first_line(kept)}",
                status_code=status, response=kept,
                retry_after=retry_after_seconds(response.headers),
            )
        if 300 <= status < 400:
            # A proxy may echo the request (key and all) in where it points.
            where = self._redact(response.headers.get("Location", "?"))
            return PermanentError(
                f"the CAD answered a redirect {status} to {where}: check SONORAN_API_URL",
                status_code=status, response=kept,
            )
        return PermanentError(
            f"the CAD rejected {what} ({status}): {_problem_text(kept)}",
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


_JSON = {"Content-Type": "application/json"}


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the connection was never made (refused, no route, name not found), so
    the request cannot have reached the CAD; False for a connection cut afterwards."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _number_if_digits(server: str) -> int | str:
    """An id as a v1 body carries it: a number when it is one (the docs type them so)."""
    return int(server) if server.isdigit() and len(server) < 10 else server


def _emergency_calls(text: str) -> list[dict[str, Any]] | None:
    """The emergency calls of a call-list answer (``emergencyCalls`` in any letter case,
    v1 and v2 spell it differently), or None when the answer is not such a list."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        if isinstance(key, str) and key.lower() == "emergencycalls":
            if isinstance(value, list):
                return [c for c in value if isinstance(c, dict)]
            return [] if value is None else None
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
