"""dispatcher.cad: every answer class of the CAD, against a fake session (no network).

The real network path (sockets, urllib3's stream, the simulator) is
tests/integration/test_cad_http.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, cast

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from dispatcher.cad import (
    KEPT_ANSWER_CHARS,
    MAX_ANSWER_BYTES,
    MAX_RETRY_AFTER_S,
    CadClient,
    Delivered,
    retry_after_seconds,
)
from dispatcher.call import Call
from dispatcher.errors import (
    Ambiguous,
    ConfigError,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
)
from dispatcher.settings import Secret, Settings
from tests.conftest import SEED_CALL
from tests.unit.fakecad import (
    API_KEY,
    COMMUNITY,
    FIRST_CALL_ID,
    FakeClock,
    FakeRaw,
    FakeResponse,
    FakeSession,
    problem,
    proxy_page,
    text,
    v1_added,
    v2_created,
    v2_too_many,
)

CAD_URL = "https://cad.example"


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"api_url": CAD_URL, "community_id": COMMUNITY,
                            "api_key": Secret(API_KEY), "read_timeout_s": 5.0,
                            "connect_timeout_s": 3.0}
    return Settings(**{**base, **overrides})


@pytest.fixture
def call() -> Call:
    return Call.parse(SEED_CALL).with_envelope("01JCALL0000000000000000000", 1_700_000_000.0)


@pytest.fixture
def session() -> FakeSession:
    return FakeSession()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client_for(session: FakeSession, clock: FakeClock) -> Callable[..., CadClient]:
    def make(**overrides: Any) -> CadClient:
        return CadClient(settings(**overrides),
                         session_factory=lambda: cast(requests.Session, session), clock=clock)
    return make


@pytest.fixture
def v1(client_for: Callable[..., CadClient]) -> CadClient:
    return client_for()


@pytest.fixture
def v2(client_for: Callable[..., CadClient]) -> CadClient:
    return client_for(api_version=2)


def failure(client: CadClient, call: Call) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        client.send(call)
    return info.value


# -- v1 success --------------------------------------------------------------------------


def test_v1_success_is_delivered_with_the_numeric_cad_id(
    v1: CadClient, call: Call, session: FakeSession, clock: FakeClock
) -> None:
    answer = v1_added()
    answer.raw = FakeRaw(b"EMERGENCY CALL ADDED ID: 10001", on_read=lambda: clock.advance(0.25))
    session.queue(answer)

    result = v1.send(call)

    assert isinstance(result, Delivered)
    assert result.cad_call_id == str(FIRST_CALL_ID)
    assert result.status_code == 200
    assert result.response == f"EMERGENCY CALL ADDED ID: {FIRST_CALL_ID}"
    assert result.elapsed_s == 0.5  # two reads on the injected clock
    assert answer.closed


def test_v1_sends_the_exact_seed_body(v1: CadClient, call: Call, session: FakeSession) -> None:
    v1.send(call)

    [sent] = session.posts
    assert sent["url"] == f"{CAD_URL}/emergency/call_911"
    assert sent["headers"] == {"Content-Type": "application/json"}
    assert sent["timeout"] == (3.0, 5.0)
    assert sent["allow_redirects"] is False and sent["stream"] is True
    body = session.last_body
    assert list(body) == ["id", "key", "type", "data"]
    assert (body["id"], body["key"], body["type"]) == (COMMUNITY, API_KEY, "CALL_911")
    # The seed's call, tagged with our id and the time it was made (strings).
    tags = {"dispatcherCallId": call.id, "dispatcherQueuedAt": "2023-11-14T22:13:20.000Z"}
    assert body["data"] == [{**SEED_CALL, "metaData": {**SEED_CALL["metaData"], **tags}}]
    assert session.headers["User-Agent"].startswith("sonoran-dispatcher/")


@pytest.mark.parametrize(("made_ago_s", "sent", "passed"), [
    (0, 30, False), (59, 30, False), (61, 29, False), (29 * 60 + 1, 1, False),
    (30 * 60, 1, True), (5 * 3600, 1, True),
])
def test_delete_after_minutes_counts_from_when_the_call_was_made(
    session: FakeSession, made_ago_s: float,
    sent: int, passed: bool,
) -> None:
    now = 1_700_000_000.0
    made = Call.parse({**SEED_CALL, "deleteAfterMinutes": 30}).with_envelope(
        "01J", now - made_ago_s)

    CadClient(settings(), session_factory=lambda: cast(requests.Session, session),
              wall=lambda: now).send(made)

    data = session.last_body["data"][0]
    assert data["deleteAfterMinutes"] == sent
    assert ("dispatcherDeleteAfterPassed" in data["metaData"]) is passed


def test_v1_fills_in_the_configured_server_id(
    client_for: Callable[..., CadClient], session: FakeSession
) -> None:
    bare = Call.parse({k: v for k, v in SEED_CALL.items() if k != "serverId"})

    client_for(server_id="7").send(bare)

    assert session.last_body["data"][0]["serverId"] == "7"


def test_v1_keeps_an_integer_server_id(v1: CadClient, session: FakeSession) -> None:
    v1.send(Call.parse({**SEED_CALL, "serverId": 3}))

    assert session.last_body["data"][0]["serverId"] == 3


@pytest.mark.parametrize(
    ("answer", "cad_id"),
    [("EMERGENCY CALL ADDED ID:777", "777"), ("EMERGENCY CALL ADDED ID 778", "778"),
     ("emergency call added", None), ("EMERGENCY CALL ADDED ID: 10001,10002", "10001")],
)
def test_v1_success_text_is_parsed_tolerantly(
    v1: CadClient, call: Call, session: FakeSession, answer: str, cad_id: str | None
) -> None:
    session.queue(text(200, answer))

    assert v1.send(call).cad_call_id == cad_id


# -- v1 permanent failures ---------------------------------------------------------------


@pytest.mark.parametrize("answer", ["INVALID REQUEST TYPE", "INVALID COMMUNITY ID",
                                    "API IS NOT ENABLED FOR THIS COMMUNITY", "INVALID API KEY"])
def test_each_seed_400_is_permanent_and_kept(
    v1: CadClient, call: Call, session: FakeSession, answer: str
) -> None:
    session.queue(text(400, answer))

    exc = failure(v1, call)

    assert type(exc) is PermanentError
    assert exc.status_code == 400
    assert exc.response == answer
    assert answer in str(exc)


@pytest.mark.parametrize("status", [413, 422, 403])
def test_other_4xx_are_permanent(
    v1: CadClient, call: Call, session: FakeSession, status: int
) -> None:
    session.queue(proxy_page(status))

    exc = failure(v1, call)

    assert type(exc) is PermanentError
    assert exc.status_code == status


def test_a_redirect_is_permanent_and_names_where_it_points(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    session.queue(proxy_page(302, {"Location": "https://elsewhere.example/"}))

    exc = failure(v1, call)

    assert type(exc) is PermanentError
    assert exc.status_code == 302
    assert "https://elsewhere.example/" in str(exc) and "SONORAN_API_URL" in str(exc)


def test_a_redirect_that_echoes_the_key_does_not_carry_it_into_the_error(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    key = v1._settings.api_key.reveal()  # type: ignore[union-attr]
    session.queue(proxy_page(302, {"Location": f"https://elsewhere.example/?key={key}"}))

    exc = failure(v1, call)

    assert key not in str(exc) and "https://elsewhere.example/" in str(exc)


# -- v1 retryable failures ---------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_5xx_and_408_html_pages_are_retryable(
    v1: CadClient, call: Call, session: FakeSession, status: int
) -> None:
    session.queue(proxy_page(status, {"Retry-After": "4"}))

    exc = failure(v1, call)

    # A proxy's 502/504 means its upstream took the request: the CAD may have the call.
    assert type(exc) is (Ambiguous if status in (502, 504) else RetryableError)
    assert exc.status_code == status
    assert exc.response is not None and "<html>" in exc.response
    assert str(status) in str(exc)
    assert exc.retry_after == 4.0


def test_empty_502_is_retryable(v1: CadClient, call: Call, session: FakeSession) -> None:
    session.queue(FakeResponse(502, b"", "text/html"))

    exc = failure(v1, call)

    assert type(exc) is Ambiguous
    assert exc.status_code == 502
    assert exc.response == ""
    assert "empty body" in str(exc)


def test_429_with_retry_after_is_rate_limited(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    session.queue(proxy_page(429, {"Retry-After": "7"}))

    exc = failure(v1, call)

    assert isinstance(exc, RateLimited) and isinstance(exc, RetryableError)
    assert exc.status_code == 429
    assert exc.retry_after == 7.0


def test_429_without_retry_after_has_none(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    session.queue(proxy_page(429))

    exc = failure(v1, call)

    assert isinstance(exc, RateLimited)
    assert exc.retry_after is None


def test_a_connect_timeout_is_retryable_the_request_never_left(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    session.queue(requests.ConnectTimeout("connect timed out"))

    exc = failure(v1, call)

    assert type(exc) is RetryableError
    assert "timeout" in str(exc) and exc.status_code is None


def test_a_read_timeout_is_ambiguous(v1: CadClient, call: Call, session: FakeSession) -> None:
    session.queue(requests.ReadTimeout("read timed out"))

    exc = failure(v1, call)

    # The request was written: the CAD may have created the call before it went quiet.
    assert type(exc) is Ambiguous and isinstance(exc, RetryableError)
    assert "in time" in str(exc) and exc.status_code is None


def _refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/", reason))  # type: ignore[arg-type]


def test_a_refused_connection_is_retryable_not_ambiguous(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    session.queue(_refused())

    exc = failure(v1, call)

    assert type(exc) is RetryableError
    assert "could not connect" in str(exc) and "ConnectionError" in str(exc)


@pytest.mark.parametrize("raised", [
    requests.ConnectionError("Connection aborted: RemoteDisconnected"),
    requests.exceptions.ChunkedEncodingError("reset mid-body"),
    requests.exceptions.ContentDecodingError("bad gzip"),
])
def test_a_connection_lost_after_sending_is_ambiguous(
    v1: CadClient, call: Call, session: FakeSession, raised: Exception
) -> None:
    session.queue(raised)

    exc = failure(v1, call)

    assert type(exc) is Ambiguous
    assert type(raised).__name__ in str(exc)
    assert exc.status_code is None


def test_a_connection_cut_while_reading_the_answer_is_ambiguous(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    cut = FakeResponse(200, raw=FakeRaw(b"", fail=ProtocolError("Connection broken")))
    session.queue(cut)

    exc = failure(v1, call)

    assert type(exc) is Ambiguous
    assert "connection lost" in str(exc) and exc.status_code is None
    assert cut.closed


def test_any_other_requests_error_is_retryable(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    session.queue(requests.exceptions.InvalidHeader("odd header"))

    exc = failure(v1, call)

    assert type(exc) is RetryableError
    assert "HTTP error" in str(exc)


@pytest.mark.parametrize("page", [
    "<html><body><h1>Sign in to the hotel Wi-Fi</h1></body></html>",
    "<html><body><h1>Sign in</h1><p>Request ID: 8842</p></body></html>",
])
def test_a_200_that_is_not_the_cads_answer_is_retryable(
    v1: CadClient, call: Call, session: FakeSession, page: str
) -> None:
    session.queue(FakeResponse(200, page, "text/html"))

    exc = failure(v1, call)

    assert type(exc) is RetryableError
    assert exc.status_code == 200


def test_the_client_recovers_after_a_failure(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    session.queue(requests.ConnectionError("reset"), v1_added())
    failure(v1, call)

    assert v1.send(call).cad_call_id == str(FIRST_CALL_ID)


def test_an_answer_is_read_up_to_a_cap_and_kept_shorter(
    v1: CadClient, call: Call, session: FakeSession
) -> None:
    huge = FakeResponse(503, b"x" * (MAX_ANSWER_BYTES * 3), "text/html")
    session.queue(huge)

    exc = failure(v1, call)

    assert huge.raw.reads == MAX_ANSWER_BYTES // 8192
    assert exc.response == "x" * KEPT_ANSWER_CHARS


def test_each_thread_has_its_own_session(call: Call, clock: FakeClock) -> None:
    made: list[FakeSession] = []

    def factory() -> requests.Session:
        made.append(FakeSession())
        return cast(requests.Session, made[-1])

    client = CadClient(settings(), session_factory=factory, clock=clock)
    client.send(call)
    client.send(call)
    other = threading.Thread(target=client.send, args=(call,))
    other.start()
    other.join()

    assert [len(s.posts) for s in made] == [2, 1]


# -- a CAD that drips its answer ---------------------------------------------------------


def test_a_dripping_answer_ends_at_the_request_deadline(
    v1: CadClient, call: Call, session: FakeSession, clock: FakeClock
) -> None:
    # One byte per read, 0.05 s apart on the injected clock; the deadline is 3 + 5 s.
    drip = FakeRaw(b"E" * 4000, chunk=1, on_read=lambda: clock.advance(0.05))
    session.queue(FakeResponse(200, raw=drip))

    exc = failure(v1, call)

    assert type(exc) is Ambiguous and "in time" in str(exc)
    assert drip.reads == 161  # 8 s / 0.05 s, and the read that found the deadline passed


# -- v2 ----------------------------------------------------------------------------------


def test_v2_success_returns_call_id_and_uses_a_bearer_header(
    v2: CadClient, session: FakeSession
) -> None:
    meta_call = Call.parse({**SEED_CALL, "metaData": {"postal": 350, "priority": 2,
                                                      "silentAlert": True, "x": 12.5,
                                                      "tags": ["a"]}})
    session.queue(v2_created())

    result = v2.send(meta_call)

    assert result.cad_call_id == str(FIRST_CALL_ID)
    [sent] = session.posts
    assert sent["url"] == f"{CAD_URL}/v2/emergency/servers/1/calls/911"
    assert sent["headers"] == {"Authorization": f"Bearer {API_KEY}",
                               "Content-Type": "application/json"}
    body = session.last_body
    assert set(body) == {"isEmergency", "caller", "location", "description", "metaData"}
    assert body["metaData"] == {"postal": "350", "priority": "2", "silentAlert": "true",
                                "x": "12.5", "tags": '["a"]'}
    assert API_KEY.encode() not in sent["data"]


def test_v2_uses_the_calls_own_server_id_in_the_path(v2: CadClient, session: FakeSession) -> None:
    session.queue(v2_created(server_id="7"))

    v2.send(Call.parse({**SEED_CALL, "serverId": "7/../x"}))

    assert session.posts[0]["url"] == f"{CAD_URL}/v2/emergency/servers/7%2F..%2Fx/calls/911"


def test_v2_wrong_key_401_is_permanent(v2: CadClient, call: Call, session: FakeSession) -> None:
    session.queue(problem(401, "Unauthorized", "Invalid or missing API key"))

    exc = failure(v2, call)

    assert type(exc) is PermanentError
    assert exc.status_code == 401
    assert "Invalid or missing API key" in str(exc)


def test_v2_unknown_server_404_is_permanent(
    v2: CadClient, call: Call, session: FakeSession
) -> None:
    session.queue(problem(404, "Not Found", "Server 9 is not configured"))

    exc = failure(v2, call)

    assert type(exc) is PermanentError
    assert exc.status_code == 404
    assert "Server 9 is not configured" in str(exc)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "12"}, 12.0), ({"RateLimit-Reset": "42"}, 42.0), ({}, None),
])
def test_v2_429_reads_when_to_come_back(
    v2: CadClient, call: Call, session: FakeSession, headers: dict[str, str],
    expected: float | None
) -> None:
    session.queue(v2_too_many(headers))

    exc = failure(v2, call)

    assert isinstance(exc, RateLimited)
    assert exc.retry_after == expected
    assert exc.response is not None and "API rate limit exceeded" in exc.response


def test_v2_200_that_is_not_json_is_retryable(
    v2: CadClient, call: Call, session: FakeSession
) -> None:
    session.queue(FakeResponse(200, "<html>portal</html>", "text/html"))

    exc = failure(v2, call)

    assert type(exc) is RetryableError


# -- the API key never leaks into an error -----------------------------------------------

LEAK_CASES: dict[str, tuple[int, Callable[[str], FakeResponse | Exception],
                            type[DeliveryError]]] = {
    "400-request-type": (1, lambda k: text(400, "INVALID REQUEST TYPE"), PermanentError),
    "400-key": (1, lambda k: text(400, "INVALID API KEY"), PermanentError),
    "400-echoing-the-key": (1, lambda k: text(400, f"INVALID API KEY {k}"), PermanentError),
    "401": (2, lambda k: problem(401, "Unauthorized", "Invalid or missing API key"),
            PermanentError),
    "v2-401-echoing-the-key": (2, lambda k: problem(401, "Unauthorized", f"bad token {k}"),
                               PermanentError),
    "404": (2, lambda k: problem(404, "Not Found", "Server 1 is not configured"),
            PermanentError),
    "5xx": (1, lambda k: proxy_page(503), RetryableError),
    "5xx-echoing-the-key": (1, lambda k: FakeResponse(500, f"<pre>bad key={k}</pre>", "text/html"),
                            RetryableError),
    "429-retry-after": (1, lambda k: proxy_page(429, {"Retry-After": "3"}), RateLimited),
    "v2-429": (2, lambda k: v2_too_many(), RateLimited),
    "timeout": (1, lambda k: requests.ReadTimeout(f"{CAD_URL}: read timed out"),
                RetryableError),
    "refused": (1, lambda k: requests.ConnectionError(f"{CAD_URL}: refused"), RetryableError),
    "html200-echoing-the-key": (1, lambda k: FakeResponse(200, f"<p>{k}</p>", "text/html"),
                                RetryableError),
}


@pytest.mark.parametrize("case", sorted(LEAK_CASES))
def test_no_error_carries_the_key(
    case: str, client_for: Callable[..., CadClient], call: Call, session: FakeSession
) -> None:
    version, answer, expected = LEAK_CASES[case]
    session.queue(answer(API_KEY))

    exc = failure(client_for(api_version=version), call)

    assert isinstance(exc, expected)
    for shown in (str(exc), repr(exc), exc.response or "", repr(exc.args),
                  repr(exc.__cause__), repr(exc.__context__)):
        assert API_KEY not in shown


def test_a_client_without_credentials_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="SONORAN_API_KEY"):
        CadClient(Settings(api_url=CAD_URL, community_id="c"))
    with pytest.raises(ConfigError, match="SONORAN_COMMUNITY_ID"):
        CadClient(Settings(api_url=CAD_URL))


# -- Retry-After parsing -----------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "5"}, 5.0),
        ({"Retry-After": " 2.5 "}, 2.5),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": "999999"}, MAX_RETRY_AFTER_S),
        ({"RateLimit-Reset": "17"}, 17.0),
        ({"X-RateLimit-Reset": "9"}, 9.0),
        ({"X-RateLimit-Reset": str(int(NOW) + 42)}, 42.0),
        ({"Retry-After": "soon", "RateLimit-Reset": "8"}, 8.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == expected


def test_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW + 30, tz=timezone.utc)

    value = retry_after_seconds({"Retry-After": format_datetime(when, usegmt=True)}, now=NOW)

    assert value == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=NOW) == 0.0


def test_retry_after_garbage_date() -> None:
    assert retry_after_seconds({"Retry-After": "Wed, 99 Foo 2015 25:61:00 GMT"}, now=NOW) is None
