"""dispatcher.http.server._no_spin_while_serving: waitress's loop does not look at a
connection whose request is being served, and large answers still arrive whole, to a
client that reads late, below and above waitress's output high watermark."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from waitress.server import create_server

from dispatcher.http.server import _no_spin_while_serving, _Pools

CHUNK = b"x" * 65536


def _app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    chunks = int(environ["PATH_INFO"].strip("/") or "1")
    start_response("200 OK", [("Content-Length", str(chunks * len(CHUNK)))])
    for _ in range(chunks):
        yield CHUNK


@pytest.fixture
def server() -> Iterator[Any]:
    _no_spin_while_serving()
    made = create_server(_app, host="127.0.0.1", port=0, _dispatcher=_Pools(2, 2),
                         outbuf_high_watermark=1024 * 1024)
    thread = threading.Thread(target=made.run, daemon=True)
    thread.start()
    yield made
    made.close()


def _get(port: int, chunks: int, pause_s: float) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(f"GET /{chunks} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        time.sleep(pause_s)  # the server's socket buffer fills; its outbuf holds the rest
        got = b""
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            got += data
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    return len(body)


@pytest.mark.parametrize("chunks", [1, 8, 64])  # 64 KiB, 512 KiB, 4 MiB (watermark 1 MiB)
def test_large_answers_arrive_whole_to_a_late_reader(server: Any, chunks: int) -> None:
    assert _get(server.effective_port, chunks, 0.3) == chunks * len(CHUNK)


def test_the_patch_is_applied_once() -> None:
    from waitress.channel import HTTPChannel

    _no_spin_while_serving()
    first = HTTPChannel.writable
    _no_spin_while_serving()
    assert HTTPChannel.writable is first
