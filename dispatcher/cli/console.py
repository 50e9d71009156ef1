"""What every CLI command shares: its errors, exit codes, JSON output and Redis client."""

from __future__ import annotations

import sys
from typing import Any

import redis

from dispatcher.display import json_text, safe
from dispatcher.settings import Settings

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A one-line error for the user."""


class UsageError(CliError):
    """The command line itself is wrong (exit 2)."""


def first_line(exc: BaseException) -> str:
    """An exception's first line, secrets hidden (redis/kombu errors may name the URL)."""
    from dispatcher import redact

    return redact.text((str(exc).splitlines() or [type(exc).__name__])[0])[:200]


def client_for(settings: Settings) -> redis.Redis:
    """A Redis client; this process's clock is measured against Redis's when it is the
    first (`dispatcher.clock`; quietly skipped when Redis does not answer)."""
    from dispatcher import clock
    from dispatcher.redisconn import connect

    client = connect(settings)
    if not clock.synced():
        clock.sync_quietly(client)
    return client


def emit(data: Any, indent: int | None = 2) -> None:
    """JSON output for scripts (ASCII only: no control character reaches a terminal)."""
    print(json_text(data, indent=indent), flush=True)


def say(text: object, err: bool = False) -> None:
    """One line of text for a person: controls, bidi and invisible characters escaped."""
    print(safe(text), file=sys.stderr if err else sys.stdout, flush=True)


