"""dispatcher.keys: every key name under a prefix, as the module docstring lists them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dispatcher import keys as keys_module
from dispatcher.keys import Keys

PLACES = ("held", "queued", "scheduled", "inflight", "pending", "dead", "invalid")
SHARED = {
    "invalid_summary": "invalid:summary",
    "invalid_hashes": "invalid:hashes",
    "circuit": "circuit",
    "rate": "rate",
    "counters": "counters",
    "audit": "audit",
    "latency": "latency",
    "heartbeats": "heartbeats",
    "history": "history",
}


@pytest.mark.parametrize("prefix", ["dispatcher", "tenant-a"])
def test_every_property_names_its_key_under_the_prefix(prefix: str) -> None:
    k = Keys(prefix)

    for place in PLACES:
        assert getattr(k, place) == f"{prefix}:{place}"
    for attr, name in SHARED.items():
        assert getattr(k, attr) == f"{prefix}:{name}"


def test_per_call_keys_carry_their_id() -> None:
    k = Keys("p")

    assert k.call("01ABC") == "p:call:01ABC"
    assert k.idem("order-66") == "p:idem:order-66"
    assert k.batch("01FIRST") == "p:batch:01FIRST"


def test_the_default_prefix_is_dispatcher() -> None:
    assert Keys().circuit == "dispatcher:circuit"


def test_the_docstring_lists_every_property() -> None:
    listed = set(re.findall(r"\{p\}:([a-z:]+)", keys_module.__doc__ or ""))
    properties = {name for name, value in vars(Keys).items() if isinstance(value, property)}
    named = {getattr(Keys("x"), name)[2:] for name in properties}

    per_item = {"call:", "idem:", "batch:", "verifying:", "readback:", "cad:", "ticket:"}  # methods
    assert named <= listed
    assert per_item <= listed
    # the keys not properties: the Lua side alone uses them
    assert listed - named - per_item == {"rate:granted", "readback:servers"}
    assert "k('readback:servers')" in (Path(keys_module.__file__).parent / "lua"
                                       / "_verify.lua").read_text()
    lua = Path(keys_module.__file__).parent / "lua" / "_ratelimit.lua"
    assert "k('rate:granted')" in lua.read_text()
