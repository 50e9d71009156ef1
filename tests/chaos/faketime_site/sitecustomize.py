"""Put on PYTHONPATH only for the processes a test runs under ``faketime``.

libfaketime 0.9.10 (Debian's) with FAKETIME_DONT_FAKE_MONOTONIC breaks Python 3.11+'s
``time.sleep``: the absolute CLOCK_MONOTONIC deadline it passes to clock_nanosleep is
moved by the faked offset, and the kernel answers EINVAL (wolfcw/libfaketime#426). Where
that happens, sleep through ``select`` instead, which libfaketime leaves alone at speed 1;
the wall clock stays faked, which is the point. Nothing changes where sleep works.
"""

import os
import select
import time

if os.environ.get("FAKETIME"):
    try:
        time.sleep(0)
    except OSError:
        def _sleep(seconds: float) -> None:
            if seconds < 0:
                raise ValueError("sleep length must be non-negative")
            deadline = time.monotonic() + seconds
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                select.select([], [], [], left)

        time.sleep = _sleep
