"""dispatcher.schedule.busy: which communities' pumps have calls in play."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import fakeredis

from dispatcher.keys import Keys
from dispatcher.schedule import busy


def test_only_communities_with_calls_in_play_are_busy() -> None:
    client = fakeredis.FakeRedis()
    pumps = cast(Any, [SimpleNamespace(keys=Keys(f"dispatcher@{n}")) for n in "abcdef"])
    client.zadd("dispatcher@b:held", {"x": 1})
    client.zadd("dispatcher@c:scheduled", {"x": 1})
    client.zadd("dispatcher@d:verifying", {"x": 1})
    client.zadd("dispatcher@e:dead", {"x": 1})      # dead letters wait for a person
    client.zadd("dispatcher@f:inflight", {"x": 1})

    assert busy(client, pumps) == [False, True, True, True, False, True]
    assert busy(client, pumps[:1]) == [True]  # one community: always ticked
