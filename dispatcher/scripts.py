"""The one loader of the Lua scripts in ``dispatcher/lua/``.

Each script opens with a comment naming every ``KEYS[i]`` and ``ARGV[i]`` it takes. A
line ``--!include _name.lua`` is replaced by that file (its own includes expanded first,
each file once per script): ``_calls.lua`` (key helpers and a call's places),
``_circuit.lua`` (the breaker), ``_ratelimit.lua`` (the rate limiter), ``_observe.lua``
(the latency histogram), ``_verify.lua`` (verifying calls and the read-back),
``_deliver.lua`` (a delivery) and ``_notify.lua`` (telling a waiting door). Scripts are
registered with redis-py's ``register_script``, so they run by EVALSHA and are loaded
again by themselves after a Redis restart.
"""

from __future__ import annotations

import functools
import weakref
from importlib import resources
from typing import Any

import redis
import redis.client
from redis.commands.core import Script
from redis.exceptions import NoScriptError

INCLUDE = "--!include "


@functools.cache
def source(name: str) -> str:
    """The text of script ``name`` with its includes expanded."""
    return _expand(name, set())


def _expand(name: str, seen: set[str]) -> str:
    seen.add(name)
    text = (resources.files("dispatcher") / "lua" / name).read_text(encoding="utf-8")
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith(INCLUDE):
            included = line[len(INCLUDE):].strip()
            if included not in seen:
                out.append(_expand(included, seen))
        else:
            out.append(line)
    return "".join(out)


#: The scripts registered on each client, so a call on a hot path (the scheduler's tick)
#: builds no new Script (and hashes no source) after the first.
_registered: weakref.WeakKeyDictionary[redis.Redis, dict[str, Script]] = (
    weakref.WeakKeyDictionary())


def register(client: redis.Redis, name: str) -> Script:
    """Script ``name`` bound to ``client`` (called like ``script(keys=[...], args=[...])``);
    the same object for the same client and name."""
    scripts = _registered.setdefault(client, {})
    script = scripts.get(name)
    if script is None:
        script = scripts[name] = client.register_script(source(name))
    return script


#: Per connection pool, the scripts Redis is known to hold (it answered their EVALSHA).
_loaded: weakref.WeakKeyDictionary[redis.ConnectionPool, set[str]] = weakref.WeakKeyDictionary()


def execute(pipe: redis.client.Pipeline) -> list[Any]:
    """Execute a pipeline made only of scripts, without redis-py's ``SCRIPT EXISTS``
    before every execution (a round trip of its own, on every scheduler tick) once Redis
    is known to hold them. A Redis that lost them (restarted, ``SCRIPT FLUSH``) answers
    every ``EVALSHA`` with NOSCRIPT and runs none of them; the pipeline is then sent
    again the way redis-py sends it, loading them first."""
    pool = pipe.connection_pool
    known = _loaded.setdefault(pool, set())
    shas = {script.sha for script in pipe.scripts}
    if not shas <= known:
        out = list(pipe.execute())
        known |= shas
        return out
    stack, scripts = list(pipe.command_stack), set(pipe.scripts)
    pipe.scripts = set()
    try:
        return list(pipe.execute())
    except NoScriptError:
        known.clear()
        pipe.command_stack, pipe.scripts = stack, scripts
        out = list(pipe.execute())
        known |= shas
        return out
