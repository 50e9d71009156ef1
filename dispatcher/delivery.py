"""Delivery: what a worker does with one message. Celery-free, so tests drive it directly.

    claim ─> (wait for the rate slot, at most MAX_SLOT_WAIT_S) ─> POST ─> record outcome

The outcome is recorded with its own short retry loop: Redis blinking right after the
CAD said yes must not turn a delivered call into a re-sent one. If Redis stays
unreachable for longer than half the call's lease (the retry loop then gives up), the
lease runs out and the call is checked in the CAD's list before it is sent again
(`dispatcher.readback`), as is any call whose answer was lost (`Ambiguous`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from dispatcher import clock as shared_clock
from dispatcher.cad import CadClient
from dispatcher.call import Call
from dispatcher.errors import (
    Ambiguous,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
)
from dispatcher.lifecycle import Claim, Lifecycle
from dispatcher.policy import RetryPolicy
from dispatcher.redisconn import transient

log = logging.getLogger("dispatcher.delivery")
T = TypeVar("T")

class Deliverer:
    """Sends one claimed call and records what happened."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        cad: CadClient,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = shared_clock.now,
    ) -> None:
        self.lifecycle = lifecycle
        self.cad = cad
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        # Keep retrying an outcome write for half the lease: long enough to ride out a
        # Redis restart, short enough that the lease has not yet handed the call on.
        self._record_for_s = lifecycle.lease_s / 2

    def deliver(self, call_id: str, gen: int) -> str:
        """Handle one message; returns what happened (for logs and tests)."""
        claim = self._record(lambda: self.lifecycle.claim(call_id, gen))
        if claim.kind != "claimed" or claim.call is None:
            log.debug("call %s gen %s not sent: %s %s", call_id, gen, claim.kind, claim.detail)
            return claim.kind
        if claim.wait_s > 0:
            # Sleep to the slot's absolute start, so our own latency does not shift it.
            self.sleep(max(0.0, claim.start_at - self.clock()))
        gated = self.lifecycle.flow.send_gap_s > 0
        if gated and not self._pass_gate(call_id, gen):
            return "held"
        call = claim.call
        # Tell the gate when the request left, as soon as its bytes are written (or, if
        # the client could not say, once the exchange is over: later, so safe).
        departed = self._departed if gated else None
        sent_at = time.monotonic()
        try:
            if claim.removal:
                return self._remove(call, gen, claim, departed)
            result = self.cad.send(call, on_written=departed) if departed else \
                self.cad.send(call)
        except DeliveryError as exc:
            return self._failed(call, gen, claim.failures, exc, time.monotonic() - sent_at)
        finally:
            if departed:
                departed()
        self._record(lambda: self.lifecycle.delivered(
            call_id, result.cad_call_id, result.status_code, result.response, result.elapsed_s))
        log.info("call %s delivered as CAD call %s in %.0f ms", call_id,
                 result.cad_call_id or "?", result.elapsed_s * 1000)
        return "delivered"

    def _departed(self) -> None:
        """Report this thread's departure to the send gate (once; never raises)."""
        try:
            self.lifecycle.rate.sent()
        except Exception:  # the gate counts an unreported "go" as gone after a timeout
            log.debug("could not report a departure to the send gate", exc_info=True)

    def _remove(self, call: Call, gen: int, claim: Claim,
                departed: Callable[[], None] | None = None) -> str:
        """Remove a delivered call from the CAD (`dispatcher.takeback`); retried like a send."""
        sent_at = time.monotonic()
        try:
            if not claim.cad_call_id:
                raise PermanentError("the CAD's id of this call is unknown (its answer had "
                                     "none), so it cannot be removed: remove it in the CAD")
            result = (self.cad.remove(call, claim.cad_call_id, on_written=departed)
                      if departed else self.cad.remove(call, claim.cad_call_id))
        except Ambiguous as exc:  # removing twice is harmless: a plain retry
            return self._failed(call, gen, claim.failures,
                                RetryableError(str(exc), status_code=exc.status_code,
                                               response=exc.response),
                                time.monotonic() - sent_at)
        except DeliveryError as exc:
            return self._failed(call, gen, claim.failures, exc, time.monotonic() - sent_at)
        self._record(lambda: self.lifecycle.removed(call.id, gen, result.status_code,
                                                    result.response))
        log.info("call %s removed from the CAD (CAD call %s)", call.id, claim.cad_call_id)
        return "removed"

    def _pass_gate(self, call_id: str, gen: int) -> bool:
        """Wait at the send gate; False (call back in line) on a 429 pause or a long wait."""
        waited = 0.0
        while True:
            verdict = self._record(lambda: self.lifecycle.rate.gate(report=True))
            if verdict == "go":
                return True
            if verdict == "paused" or waited > self.lifecycle.flow.max_wait_s:
                self._record(lambda: self.lifecycle.unclaim(call_id, gen))
                return False
            assert isinstance(verdict, float)
            self.sleep(verdict)
            waited += verdict

    def _failed(self, call: Call, gen: int, failures: int, exc: DeliveryError,
                elapsed: float) -> str:
        """Record a failed send: pause on 429, verify, schedule a retry, or bury."""
        call_id = call.id
        if isinstance(exc, RateLimited):
            self._record(lambda: self.lifecycle.retry(
                call_id, gen, self.clock(), str(exc), exc.status_code, exc.response,
                rate_limited=True, retry_after=exc.retry_after, elapsed_s=elapsed))
            log.warning("call %s: %s; every sender pauses", call_id, exc)
            return "rate_limited"
        if isinstance(exc, RetryableError):
            delay = self.policy.delay(failures + 1, exc.retry_after)
            server = None
            if isinstance(exc, Ambiguous):
                server = "" if call.server_id is None else str(call.server_id)
            placed = self._record(lambda: self.lifecycle.retry(
                call_id, gen, self.clock() + delay, str(exc), exc.status_code, exc.response,
                elapsed_s=elapsed, ambiguous_on=server))
            if placed == "verifying":
                log.warning("call %s: %s; the CAD may have it: checking its list before "
                            "sending again", call_id, exc)
            elif placed == "held":
                log.warning("call %s: %s; the CAD looks down, held until it recovers",
                            call_id, exc)
            elif placed == "cancelled":
                log.info("call %s: %s; it was taken back, so it is not sent again",
                         call_id, exc)
            elif placed != "stale":
                log.warning("call %s: %s; retry in %.1fs", call_id, exc, delay)
            return placed
        buried = self._record(lambda: self.lifecycle.dead(
            call_id, gen, "rejected", exc.status_code, exc.response, str(exc), elapsed))
        if buried == "dead":
            log.error("call %s is a dead letter: %s", call_id, exc)
        return buried

    def _record(self, fn: Callable[[], T]) -> T:
        try:
            return fn()  # the common case, without building a retry loop (worker profile)
        except Exception as exc:
            if not transient(exc):
                raise
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(transient),
            stop=tenacity.stop_after_delay(self._record_for_s),
            wait=tenacity.wait_exponential(multiplier=0.1, max=2),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(fn)
