"""dispatcher.http.prefer: ``Prefer: wait=N`` read as RFC 7240 writes it."""

from __future__ import annotations

import pytest

from dispatcher.http.prefer import MAX_WAIT_S, wait_seconds


@pytest.mark.parametrize(("headers", "seconds"), [
    ([], 0),
    (["wait=5"], 5),
    (["wait = 5"], 5),  # BWS around "="
    (["WAIT=7"], 7),  # the name is case-insensitive
    (['wait="12"'], 12),  # a quoted-string value
    (["respond-async, wait=10"], 10),
    (["respond-async,wait=10,handling=lenient"], 10),
    (["handling=lenient; foo=bar, wait=3; x=1"], 3),  # parameters after ";" are not its value
    (['return=minimal; note="a, b; wait=9", wait=4'], 4),  # "," and ";" inside quotes
    (['return="a \\" quote, wait=9", wait=2'], 2),  # an escaped quote does not end the string
    (["respond-async", "wait=8"], 8),  # several Prefer headers are one list
    (["wait=6, wait=20"], 6),  # the first one counts (RFC 7240 section 2)
    (["wait=0"], 0),  # 0: no wait
    (["wait=30"], 30),
    (["wait=31"], MAX_WAIT_S),  # above 30 is taken as 30
    (["wait=0031"], MAX_WAIT_S),
    (["wait=007"], 7),
    (["wait=" + "9" * 5000], MAX_WAIT_S),  # no int() of thousands of digits
    (["wait=-1"], 0),  # a bad value is ignored
    (["wait=1.5"], 0),
    (["wait=abc"], 0),
    (["wait="], 0),
    (["wait"], 0),
    (['wait="5'], 0),  # an unterminated quote is no number
    (["wait=\u0665"], 0),  # a non-ASCII digit is no delta-seconds
    (["waiting=5, nowait=5"], 0),  # only the name wait
    ([",,  , wait=4 ,"], 4),  # empty list elements are allowed
])
def test_wait_seconds(headers: list[str], seconds: int) -> None:
    assert wait_seconds(headers) == seconds
