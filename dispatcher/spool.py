"""The producer's local spool: calls made while Redis is down wait on disk, in order.

Opt-in (``DISPATCHER_SPOOL_DIR``, or ``Producer(spool_dir=...)``). When Redis cannot
take a call within the bounded wait, the producer stores the call, with the id it
already gave the caller, in a SQLite file (stdlib, transactional, fsync'd), and a
background thread flushes the spool to Redis when it answers again, oldest first.
While anything is spooled, new calls are spooled behind it, so order is kept.

No duplicates: each spooled call is flushed under its own id and an idempotency key,
and the enqueue script refuses a second record for either; an entry leaves the spool
only after Redis recorded it, so a crash mid-flush re-sends it harmlessly.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: File name of the spool inside its folder.
SPOOL_FILE = "spool.sqlite3"
#: How often the flusher retries while Redis is still down.
FLUSH_RETRY_S = 1.0


class Spool:
    """An ordered, durable list of call envelopes on local disk."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / SPOOL_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # FULL: the call is on disk when push() returns, as Redis would have it.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "payload TEXT NOT NULL)"
        )

    def push(self, envelope: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT INTO spool (payload) VALUES (?)", (json.dumps(envelope),))

    def peek(self, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, payload FROM spool ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(int(seq), json.loads(payload)) for seq, payload in rows]

    def remove(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM spool WHERE seq = ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Flusher:
    """Moves spooled calls into Redis in order, in a daemon thread, until the spool is empty."""

    def __init__(self, spool: Spool, send: Callable[[dict[str, Any]], None],
                 on_error: Callable[[Exception], None]) -> None:
        self.spool = spool
        self.send = send
        self.on_error = on_error
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def kick(self) -> None:
        """Start flushing if not already running."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="spool-flusher",
                                                daemon=True)
                self._thread.start()

    def flush_once(self) -> int:
        """Send what is spooled, oldest first; stops at the first failure. Returns sent."""
        sent = 0
        while True:
            batch = self.spool.peek()
            if not batch:
                return sent
            for seq, envelope in batch:
                self.send(envelope)  # raises while Redis is down; the entry stays
                self.spool.remove(seq)
                sent += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.flush_once()
                return
            except Exception as exc:  # Redis still down: try again shortly
                self.on_error(exc)
                self._stop.wait(FLUSH_RETRY_S)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the flusher thread to end; True when none runs."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()

    def stop(self, wait_s: float | None = None) -> None:
        """Stop flushing; with ``wait_s``, wait that long for the thread to end."""
        self._stop.set()
        if wait_s is not None:
            self.wait(wait_s)
