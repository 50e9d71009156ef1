"""Helpers of the door's security tests (tests/security/test_door_*): raw sockets, the
web process's memory, and a second local address of this machine."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def other_local_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None: there is none)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for candidate in out.split():
        if ":" in candidate or candidate.startswith("127."):
            continue
        try:  # it must accept a local connection (a bound, routable address)
            with socket.socket() as s:
                s.bind((candidate, 0))
            return candidate
        except OSError:
            continue
    return None


def raw_request(host: str, port: int, request: bytes, timeout: float = 5) -> bytes:
    """One request on its own connection; the whole answer (until the server closes)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
