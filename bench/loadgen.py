"""An open-loop HTTP/1.1 load generator (asyncio, raw keep-alive sockets).

Requests are due at fixed times (``start + i / rate``) whether or not earlier ones have
been answered; each is sent on the next free connection of a pool, and its latency is
measured from the time it was *due*, so a server that falls behind shows it in the
percentiles (no coordinated omission). The achieved rate is answered requests over the
time from the first due time to the last answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any


def build_request(host: str, port: int, path: str, body: bytes,
                  headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
             "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"connection" and value.strip().lower() == b"close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def _run(host: str, port: int, make_request: Any, rate: float, duration: float,
               connections: int, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    total = max(1, int(rate * duration))
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    last_done = [0.0]
    start = loop.time() + 0.05

    async def schedule() -> None:
        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((i, due))
        for _ in range(connections):
            queue.put_nowait(None)

    async def connection() -> None:
        reader = writer = None
        while True:
            item = await queue.get()
            if item is None:
                break
            i, due = item
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(make_request(i))
                status, close = await asyncio.wait_for(_read_response(reader), timeout)
                now = loop.time()
                latencies.append(now - due)
                statuses[status] += 1
                last_done[0] = max(last_done[0], now)
                if close:
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    ValueError) as exc:
                errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(schedule(), *(connection() for _ in range(connections)))
    elapsed = max(last_done[0] - start, 1e-9)
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    return {"offered_per_s": rate, "sent": total, "answered": len(latencies), "ok": ok,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "errors": dict(errors), "achieved_per_s": ok / elapsed,
            "latencies": latencies}


def open_loop(host: str, port: int, make_request: Any, rate: float, duration: float,
              connections: int = 64, timeout: float = 10.0) -> dict[str, Any]:
    """Offer ``rate`` requests/s for ``duration`` seconds; ``make_request(i)`` gives bytes."""
    return asyncio.run(_run(host, port, make_request, rate, duration, connections, timeout))


def wait_http(host: str, port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts TCP connections on host:port."""
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
