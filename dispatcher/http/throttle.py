"""Throttles of the web door, counted in Redis so that every web process shares them.

Keys (prefix ``dispatcher`` by default; ``{a}`` is the client address as
`dispatcher.http.clientaddr` believes it):

    {p}:throttle:login:fails:{a}    str   login attempts in the current window (TTL: window)
    {p}:throttle:login:lock:{a}     str   lock-out in force (TTL: time left)
    {p}:throttle:login:strikes:{a}  str   lock-outs so far (TTL: STRIKES_TTL_S)
    {p}:throttle:ingest:{a}         hash  token bucket of DISPATCHER_INGEST_RATE (TTL: refill)

Logins: `LOGIN_FAILURES` attempts per `LOGIN_WINDOW_S` from one address (each counted
before its token is compared, in one step with the lock-out check), then a lock-out of
`FIRST_LOCKOUT_S` that doubles with each further lock-out (up to `MAX_LOCKOUT_S`); a
locked address gets 429 without its token being checked. A success forgets the address.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import redis

from dispatcher import scripts

#: Failed logins allowed from one address in one window before it is locked out.
LOGIN_FAILURES = 5
#: The window those failures are counted in, seconds.
LOGIN_WINDOW_S = 60
#: First lock-out, seconds; each further one doubles.
FIRST_LOCKOUT_S = 60
#: Longest lock-out, seconds.
MAX_LOCKOUT_S = 3600
#: How long lock-outs are remembered (so the next one is longer), seconds.
STRIKES_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Verdict:
    """Whether a request may go on and, if not, when it may try again."""

    allowed: bool
    retry_after_s: int = 0


class LoginThrottle:
    """Failed operator logins per client address, with a growing lock-out."""

    def __init__(self, client: redis.Redis, prefix: str = "dispatcher") -> None:
        self.client = client
        self.base = f"{prefix}:throttle:login"
        self._attempt = scripts.register(client, "login_attempt.lua")
        self._failure = scripts.register(client, "login_failure.lua")

    def _keys(self, addr: str) -> list[str]:
        return [f"{self.base}:{part}:{addr}" for part in ("fails", "lock", "strikes")]

    def _run(self, script: Any, addr: str) -> Verdict:
        lock = int(script(keys=self._keys(addr), args=[
            LOGIN_FAILURES, LOGIN_WINDOW_S, FIRST_LOCKOUT_S, MAX_LOCKOUT_S, STRIKES_TTL_S]))
        return Verdict(True) if lock <= 0 else Verdict(False, lock)

    def check(self, addr: str) -> Verdict:
        """Before the token is compared: count the attempt, and refuse it when the address
        is locked out or has used the window's attempts (one atomic step, so a burst of
        concurrent guesses gets no more comparisons than a slow one)."""
        return self._run(self._attempt, addr)

    def failed(self, addr: str) -> Verdict:
        """The token was wrong; the verdict says whether the address is now locked out."""
        return self._run(self._failure, addr)

    def succeeded(self, addr: str) -> None:
        self.client.delete(*self._keys(addr))


class IngestRate:
    """DISPATCHER_INGEST_RATE: a token bucket per source address (burst: one second's
    worth, at least one request)."""

    def __init__(self, client: redis.Redis, rate: float, prefix: str = "dispatcher") -> None:
        self.client = client
        self.rate = rate
        self.burst = max(1.0, rate)
        self.base = f"{prefix}:throttle:ingest"
        self._take = scripts.register(client, "ingest_bucket.lua")
        self._args = [repr(rate), repr(self.burst)]  # fixed: not rebuilt per request

    def refusal(self, addr: str) -> Verdict | None:
        """The verdict when this request must wait; None when it may go on (or when
        Redis fails: the queue's own bounded wait answers 503 soon enough)."""
        try:
            verdict = self.take(addr)
        except redis.RedisError:
            return None
        return None if verdict.allowed else verdict

    def take(self, addr: str) -> Verdict:
        allowed, wait_ms = self._take(keys=[f"{self.base}:{addr}"], args=self._args)
        if int(allowed):
            return Verdict(True)
        return Verdict(False, max(1, math.ceil(int(wait_ms) / 1000)))
