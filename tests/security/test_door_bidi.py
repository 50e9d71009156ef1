"""Row "spoofing characters" (the page's share): user text on the operations page is
isolated in <bdi>, so U+202E in a caller cannot reverse the cells around it."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import redis

from dispatcher.deadletters import DeadLetters
from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env, free_port
from tests.ops.conftest import OPS_TOKEN, Operator, dead_letters, start_web

pytestmark = pytest.mark.integration

RLO = "\u202e"
CALLER = f"Jane {RLO}eoD"


def _isolated(page: str, text: str) -> bool:
    """The text (HTML-escaped as Jinja does) sits alone inside one <bdi> element."""
    return re.search(r"<bdi[^>]*>" + re.escape(text) + r"(\.\.\.)?</bdi>", page) is not None


def test_user_text_on_the_page_is_isolated(
    redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]
) -> None:
    ops_env = base_env(redis_url, sim, PORT=str(free_port()), DISPATCHER_OPS_TOKEN=OPS_TOKEN)
    procs(["worker"], ops_env)
    procs(["scheduler"], ops_env)
    web = start_web(procs, ops_env)
    (call_id,) = dead_letters(ops_env, sim, [CALLER])
    client = redis.Redis.from_url(ops_env["REDIS_URL"])
    raw_id = DeadLetters(client).bury_invalid(f"{RLO}not json", f"bad entry {RLO}x", "inbox")
    client.close()
    op = Operator(web)
    page = op.page()
    assert _isolated(page, CALLER), "the caller cell"
    assert _isolated(page, "Route 68 / Joshua Rd"), "the location cell"
    assert _isolated(page, "Two-car collision"), "the description cell"
    assert re.search(r"<bdi>rejected</bdi>", page), "the reason"
    assert re.search(r"<td class=\"answer\">\d* ?<bdi>[^<]+</bdi></td>", page), "CAD answer"
    lookup = op.page(f"call={call_id}")
    assert _isolated(lookup, CALLER), "the lookup's caller"
    raw = op.page(f"call={raw_id}")
    assert re.search(r"<bdi class=\"raw\">" + RLO + "not json</bdi>", raw), "the raw text"
    assert _isolated(raw, f"bad entry {RLO}x"), "the last error"
