"""Fixtures of the HTTP ingest tests: a real ``web`` process per test or per module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatcher.simulator import CadSimulator
from tests.conftest import Proc, base_env
from tests.http.httpkit import Web, start_web


@pytest.fixture
def web(redis_url: str, sim: CadSimulator, procs: Callable[..., Proc]) -> Web:
    """A web process of this test's own (function scope, fresh Redis database)."""
    return start_web(procs, base_env(redis_url, sim))


@pytest.fixture(scope="module")
def shared_web(redis_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One web process for a whole module of request/answer tests (Redis is flushed per
    test by ``redis_url``; the process does not mind)."""
    logs: Path = tmp_path_factory.mktemp("web")
    started: list[Proc] = []

    def start(args: list[str], env: dict[str, str], name: str | None = None) -> Proc:
        p = Proc(args, env, logs / f"{name or args[0]}.log")
        started.append(p)
        return p

    try:
        yield start_web(start, base_env(redis_base_url))
    finally:
        for p in started:
            p.stop(timeout=10)
