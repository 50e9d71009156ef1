"""What every CLI command shares: its errors, exit codes, JSON output and Redis client."""

from __future__ import annotations

import json
from typing import Any

import redis

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
    from dispatcher.redisconn import connect

    return connect(settings)


def emit(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


