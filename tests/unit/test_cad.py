"""dispatcher.cad: every answer class of the CAD, over real HTTP against the simulator."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from dispatcher.cad import MAX_RETRY_AFTER_S, CadClient, Delivered, retry_after_seconds
from dispatcher.call import Call
from dispatcher.errors import (
    ConfigError,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
)
from dispatcher.settings import Settings
from dispatcher.simulator import FIRST_CALL_ID, CadSimulator
from tests.conftest import SEED_CALL


@pytest.fixture
def call() -> Call:
    return Call.parse(SEED_CALL).with_envelope("01JCALL0000000000000000000", 1_700_000_000.0)


@pytest.fixture
def v1(cad_settings: Callable[..., Settings]) -> CadClient:
    return CadClient(cad_settings())


@pytest.fixture
def v2(cad_settings: Callable[..., Settings]) -> CadClient:
    return CadClient(cad_settings(api_version=2))


def failure(client: CadClient, call: Call) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        client.send(call)
    return info.value


# -- v1 success --------------------------------------------------------------------------


def test_v1_success_is_delivered_with_the_numeric_cad_id(
    v1: CadClient, call: Call, sim: CadSimulator
) -> None:
    result = v1.send(call)

    assert isinstance(result, Delivered)
    assert result.cad_call_id == str(FIRST_CALL_ID)
    assert result.status_code == 200
    assert result.response == f"EMERGENCY CALL ADDED ID: {FIRST_CALL_ID}"
    assert result.elapsed_s >= 0


def test_v1_sends_the_exact_seed_body(
    v1: CadClient, call: Call, sim: CadSimulator, community: str
) -> None:
    v1.send(call)

    [entry] = sim.received()
    assert entry["method"] == "POST"
    assert entry["path"] == "/emergency/call_911"
    assert entry["headers"]["Content-Type"] == "application/json"
    body = entry["body"]
    assert list(body) == ["id", "key", "type", "data"]
    assert body["id"] == community
    assert body["key"] == "***"  # the simulator redacts it; a 200 proves it matched
    assert body["type"] == "CALL_911"
    assert body["data"] == [SEED_CALL]
    [created] = sim.calls()
    assert created["call"] == SEED_CALL
    assert created["version"] == 1


def test_v1_fills_in_the_configured_server_id(
    cad_settings: Callable[..., Settings], sim: CadSimulator
) -> None:
    bare = Call.parse({k: v for k, v in SEED_CALL.items() if k != "serverId"})

    CadClient(cad_settings(server_id="7")).send(bare)

    assert sim.calls()[0]["call"]["serverId"] == "7"


def test_v1_keeps_an_integer_server_id(v1: CadClient, sim: CadSimulator) -> None:
    v1.send(Call.parse({**SEED_CALL, "serverId": 3}))

    assert sim.calls()[0]["call"]["serverId"] == 3


@pytest.mark.parametrize(
    ("text", "cad_id"),
    [("EMERGENCY CALL ADDED ID:777", "777"), ("EMERGENCY CALL ADDED ID 778", "778"),
     ("emergency call added", None)],
)
def test_v1_success_text_is_parsed_tolerantly(
    v1: CadClient, call: Call, sim: CadSimulator, text: str, cad_id: str | None
) -> None:
    sim.set_fault("html200", count=1, body=text)

    assert v1.send(call).cad_call_id == cad_id


# -- v1 permanent failures ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "arrange"),
    [
        ("INVALID REQUEST TYPE",
         lambda s: s.set_fault("reject", count=1, text="INVALID REQUEST TYPE")),
        ("INVALID COMMUNITY ID", lambda s: s.set_credentials(community_id="someone-else")),
        ("API IS NOT ENABLED FOR THIS COMMUNITY", lambda s: s.set_fault("reject", count=1)),
        ("INVALID API KEY", lambda s: s.set_credentials(api_key="a-newer-key")),
    ],
)
def test_each_seed_400_is_permanent_and_kept(
    v1: CadClient, call: Call, sim: CadSimulator, text: str,
    arrange: Callable[[CadSimulator], None],
) -> None:
    arrange(sim)

    exc = failure(v1, call)

    assert type(exc) is PermanentError
    assert exc.status_code == 400
    assert exc.response == text
    assert text in str(exc)
    assert sim.calls() == []


@pytest.mark.parametrize("status", [302, 413, 422])
def test_other_4xx_and_redirects_are_permanent(
    v1: CadClient, call: Call, sim: CadSimulator, status: int
) -> None:
    sim.set_fault("error", count=1, status=status)

    exc = failure(v1, call)

    assert type(exc) is PermanentError
    assert exc.status_code == status


# -- v1 retryable failures ---------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_5xx_and_408_html_pages_are_retryable(
    v1: CadClient, call: Call, sim: CadSimulator, status: int
) -> None:
    sim.set_fault("error", count=1, status=status)

    exc = failure(v1, call)

    assert type(exc) is RetryableError
    assert exc.status_code == status
    assert exc.response is not None and "<html>" in exc.response
    assert str(status) in str(exc)


def test_empty_502_is_retryable(v1: CadClient, call: Call, sim: CadSimulator) -> None:
    sim.set_fault("empty", count=1, status=502)

    exc = failure(v1, call)

    assert type(exc) is RetryableError
    assert exc.status_code == 502
    assert exc.response == ""
    assert "empty body" in str(exc)


def test_429_with_retry_after_is_rate_limited(v1: CadClient, call: Call, sim: CadSimulator) -> None:
    sim.set_fault("ratelimit", count=1, retry_after=7)

    exc = failure(v1, call)

    assert isinstance(exc, RateLimited) and isinstance(exc, RetryableError)
    assert exc.status_code == 429
    assert exc.retry_after == 7.0


def test_429_without_retry_after_has_none(v1: CadClient, call: Call, sim: CadSimulator) -> None:
    sim.set_fault("ratelimit", count=1)

    exc = failure(v1, call)

    assert isinstance(exc, RateLimited)
    assert exc.retry_after is None


def test_a_hang_is_a_quick_timeout(v1: CadClient, call: Call, sim: CadSimulator) -> None:
    sim.set_fault("hang", count=1, max_s=10)

    exc = failure(v1, call)

    # The fault hangs for 10 s and then answers: a timeout means the client gave up first.
    assert type(exc) is RetryableError
    assert "timeout" in str(exc)
    assert exc.status_code is None


@pytest.mark.parametrize("kind", ["refuse", "reset", "commit_then_drop"])
def test_network_failures_are_retryable(
    v1: CadClient, call: Call, sim: CadSimulator, kind: str
) -> None:
    sim.set_fault(kind, **({} if kind == "refuse" else {"count": 1}))

    exc = failure(v1, call)

    assert type(exc) is RetryableError
    assert exc.status_code is None


def test_a_200_html_page_is_retryable(v1: CadClient, call: Call, sim: CadSimulator) -> None:
    sim.set_fault("html200", count=1)

    exc = failure(v1, call)

    assert type(exc) is RetryableError
    assert exc.status_code == 200


def test_a_200_html_page_with_an_id_in_it_is_retryable(
    v1: CadClient, call: Call, sim: CadSimulator
) -> None:
    sim.set_fault("html200", count=1,
                  body="<html><body><h1>Sign in</h1><p>Request ID: 8842</p></body></html>")

    exc = failure(v1, call)

    assert type(exc) is RetryableError


def test_the_client_recovers_after_a_failure(v1: CadClient, call: Call, sim: CadSimulator) -> None:
    sim.set_fault("reset", count=1)
    failure(v1, call)

    assert v1.send(call).cad_call_id == str(FIRST_CALL_ID)


# -- v2 ----------------------------------------------------------------------------------


def test_v2_success_returns_call_id_and_uses_a_bearer_header(
    v2: CadClient, sim: CadSimulator, api_key: str
) -> None:
    meta_call = Call.parse({**SEED_CALL, "metaData": {"postal": 350, "priority": 2,
                                                      "silentAlert": True, "x": 12.5,
                                                      "tags": ["a"]}})

    result = v2.send(meta_call)

    assert result.cad_call_id == str(FIRST_CALL_ID)
    [entry] = sim.received()
    assert entry["path"] == "/v2/emergency/servers/1/calls/911"
    assert entry["headers"]["Authorization"] == "***"
    body = entry["body"]
    assert set(body) == {"isEmergency", "caller", "location", "description", "metaData"}
    assert body["metaData"] == {"postal": "350", "priority": "2", "silentAlert": "true",
                                "x": "12.5", "tags": '["a"]'}
    _, headers, raw = v2.request_for(meta_call)
    assert headers["Authorization"] == f"Bearer {api_key}"
    assert api_key.encode() not in raw


def test_v2_uses_the_calls_own_server_id_in_the_path(v2: CadClient, sim: CadSimulator) -> None:
    v2.send(Call.parse({**SEED_CALL, "serverId": 7}))

    assert sim.received()[0]["path"] == "/v2/emergency/servers/7/calls/911"


def test_v2_wrong_key_401_is_permanent(v2: CadClient, call: Call, sim: CadSimulator) -> None:
    sim.set_credentials(api_key="rotated-key")

    exc = failure(v2, call)

    assert type(exc) is PermanentError
    assert exc.status_code == 401
    assert "Invalid or missing API key" in str(exc)


def test_v2_unknown_server_404_is_permanent(v2: CadClient, sim: CadSimulator) -> None:
    exc = failure(v2, Call.parse({**SEED_CALL, "serverId": "9"}))

    assert type(exc) is PermanentError
    assert exc.status_code == 404
    assert "Server 9 is not configured" in str(exc)


def test_v2_429_reads_retry_after(v2: CadClient, call: Call, sim: CadSimulator) -> None:
    sim.set_fault("ratelimit", count=1, retry_after=12)

    exc = failure(v2, call)

    assert isinstance(exc, RateLimited)
    assert exc.retry_after == 12.0
    assert exc.response is not None and "API rate limit exceeded" in exc.response


def test_v2_429_from_the_rate_limit_reads_ratelimit_reset(
    v2: CadClient, call: Call, sim: CadSimulator
) -> None:
    sim.set_rate_limit(1, window_s=60)
    v2.send(call)

    exc = failure(v2, call)

    assert isinstance(exc, RateLimited)
    assert exc.retry_after is not None and 0 < exc.retry_after <= 60


def test_v2_200_html_page_is_retryable(v2: CadClient, call: Call, sim: CadSimulator) -> None:
    sim.set_fault("html200", count=1)

    exc = failure(v2, call)

    assert type(exc) is RetryableError


# -- the API key never leaks into an error -----------------------------------------------

LEAK_CASES: dict[str, tuple[int, Callable[[CadSimulator, str], None], type[DeliveryError]]] = {
    "400-request-type": (1, lambda s, k: s.set_fault("reject", text="INVALID REQUEST TYPE"),
                         PermanentError),
    "400-community": (1, lambda s, k: s.set_credentials(community_id="x"), PermanentError),
    "400-not-enabled": (1, lambda s, k: s.set_fault("reject"), PermanentError),
    "400-key": (1, lambda s, k: s.set_credentials(api_key="x"), PermanentError),
    "401": (2, lambda s, k: s.set_credentials(api_key="x"), PermanentError),
    "404": (2, lambda s, k: s.set_fault("reject", status=404), PermanentError),
    "5xx": (1, lambda s, k: s.set_fault("error", status=503), RetryableError),
    "5xx-echoing-the-key": (1, lambda s, k: s.set_fault("error", status=500,
                                                        body=f"<pre>bad key={k}</pre>"),
                            RetryableError),
    "400-echoing-the-key": (1, lambda s, k: s.set_fault("reject", text=f"INVALID API KEY {k}"),
                            PermanentError),
    "v2-401-echoing-the-key": (2, lambda s, k: s.set_fault("reject", status=401,
                                                           detail=f"bad token {k}"),
                               PermanentError),
    "429-retry-after": (1, lambda s, k: s.set_fault("ratelimit", retry_after=3), RateLimited),
    "429-bare": (1, lambda s, k: s.set_fault("ratelimit"), RateLimited),
    "v2-429": (2, lambda s, k: s.set_fault("ratelimit"), RateLimited),
    "hang": (1, lambda s, k: s.set_fault("hang", max_s=10), RetryableError),
    "refuse": (1, lambda s, k: s.set_fault("refuse"), RetryableError),
    "reset": (1, lambda s, k: s.set_fault("reset"), RetryableError),
    "html200": (1, lambda s, k: s.set_fault("html200"), RetryableError),
    "html200-echoing-the-key": (1, lambda s, k: s.set_fault("html200", body=f"<p>{k}</p>"),
                                RetryableError),
    "empty-502": (1, lambda s, k: s.set_fault("empty", status=502), RetryableError),
}


@pytest.mark.parametrize("case", sorted(LEAK_CASES))
def test_no_error_carries_the_key(
    case: str, cad_settings: Callable[..., Settings], call: Call, sim: CadSimulator, api_key: str
) -> None:
    version, arrange, expected = LEAK_CASES[case]
    arrange(sim, api_key)

    exc = failure(CadClient(cad_settings(api_version=version)), call)

    assert isinstance(exc, expected)
    for shown in (str(exc), repr(exc), exc.response or "", repr(exc.args),
                  repr(exc.__cause__), repr(exc.__context__)):
        assert api_key not in shown


def test_a_client_without_credentials_refuses_to_start(sim: CadSimulator) -> None:
    with pytest.raises(ConfigError, match="SONORAN_API_KEY"):
        CadClient(Settings(api_url=sim.url, community_id="c"))
    with pytest.raises(ConfigError, match="SONORAN_COMMUNITY_ID"):
        CadClient(Settings(api_url=sim.url))


# -- a CAD that drips its answer ---------------------------------------------------------


@pytest.fixture
def dripping_cad() -> Iterator[str]:
    """A bare HTTP server that sends a 200's headers, then one body byte every 50 ms."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.05)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 4000\r\n\r\n")
                while not stop.wait(0.05):
                    try:
                        conn.sendall(b"E")
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(2)
    listener.close()


def test_a_dripping_answer_ends_at_the_request_deadline(
    dripping_cad: str, cad_settings: Callable[..., Settings], call: Call
) -> None:
    client = CadClient(cad_settings(api_url=dripping_cad))
    outcome: list[object] = []

    def send() -> None:
        try:
            outcome.append(client.send(call))
        except DeliveryError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    # The answer drips forever: only the request deadline (1 s) can end the read. The
    # join's bound is a safety net against a hung suite, not a measure of the deadline.
    worker.join(60)

    assert not worker.is_alive(), "still reading: the request deadline did not end it"
    assert isinstance(outcome[0], RetryableError)


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
