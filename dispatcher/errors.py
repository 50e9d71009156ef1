"""The exception tree. It splits the way the delivery decision splits.

    DispatcherError
    ├── ConfigError            bad or missing configuration (one-line message)
    ├── QueueUnavailable       Redis could not be reached in time (producer side)
    ├── QueueFull              the backlog cap is reached (never spooled)
    ├── InvalidCall            a call payload fails validation (also a ValueError)
    └── DeliveryError          sending one call to the CAD failed
        ├── RetryableError     network error, timeout, 5xx, 408, 429, a 2xx answer that
        │                      is not the CAD's (a proxy page): try again later
        │   ├── RateLimited    429: every sender pauses; the backoff does not grow
        │   └── Ambiguous      the request was written but its answer was lost (a read
        │                      timeout, a connection cut after sending, a 502/504 from a
        │                      proxy): the CAD may have the call; read its list first
        └── PermanentError     400 and other 4xx, redirects (3xx, never followed: the
                               URL is wrong): retrying cannot help; dead letter

Only `dispatcher.cad` raises DeliveryError subclasses; it translates every ``requests``
exception so nothing above it sees one. Messages never contain the API key.
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(DispatcherError):
    """The configuration is missing or wrong; the message names the variable."""


class QueueUnavailable(DispatcherError):
    """The queue (Redis) could not be reached within the producer's bounded wait."""


class QueueFull(DispatcherError):
    """The backlog cap (DISPATCHER_MAX_BACKLOG) is reached: the call was not accepted.

    Not a QueueUnavailable: Redis answered, and the spool is for an unreachable Redis,
    never a way around the cap. Nothing already accepted is touched.
    """


class InvalidCall(DispatcherError, ValueError):
    """A call payload is not valid; the message names the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DeliveryError(DispatcherError):
    """Sending a call to the CAD did not succeed."""

    def __init__(
        self, message: str, *, status_code: int | None = None, response: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response = response


class RetryableError(DeliveryError):
    """The CAD may accept the same request later."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        response: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, response=response)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """429: the CAD asks every sender to slow down."""


class Ambiguous(RetryableError):
    """The CAD may or may not have created the call: check its list before sending again."""


class PermanentError(DeliveryError):
    """The same request can never succeed until an operator changes something."""
