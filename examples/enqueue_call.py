"""Queue a 911 call from Python code that has the dispatcher installed (`pip install .`).

    REDIS_URL=redis://localhost:6379/0 python3 enqueue_call.py

Writes the call straight into Redis; no HTTP, no web process needed.
"""

import sys

from dispatcher import InvalidCall, QueueFull, QueueUnavailable, enqueue_call

try:
    call_id = enqueue_call(
        caller="Jane Doe",
        location="Route 68 / Joshua Rd",
        description="Two-car collision",
        postal="350",
        plate="8ABC123",
    )
except InvalidCall as error:  # names the wrong field
    sys.exit(f"invalid call: {error}")
except QueueUnavailable as error:  # Redis did not answer in time; nothing was queued
    sys.exit(f"queue unavailable: {error}")
except QueueFull as error:  # DISPATCHER_MAX_BACKLOG calls wait already; nothing was queued
    sys.exit(f"queue full: {error}")
print(call_id)
