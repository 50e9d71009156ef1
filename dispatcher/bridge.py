"""The inbox bridge: moves calls that any language LPUSHed onto a Redis list into the queue.

Producers ``LPUSH`` JSON onto DISPATCHER_INBOX_KEY (``dispatcher:inbox``). The bridge
atomically moves the oldest entry to ``<inbox>:processing`` (BLMOVE), validates it, and
then, in one Lua script, removes it from the processing list and records the call (or a
dead letter ``invalid`` with the raw text). So an entry leaves Redis only when its call
is recorded, and a crash at any point neither loses nor doubles it: at start-up the
bridge puts whatever is left in the processing list back at the head of the inbox.
Several bridges may run at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time

import redis

from dispatcher.call import Call
from dispatcher.deadletters import DeadLetters
from dispatcher.errors import InvalidCall, QueueUnavailable
from dispatcher.producer import Producer

log = logging.getLogger("dispatcher.bridge")

#: Largest inbox entry accepted as a call; larger ones become dead letters ``invalid``.
MAX_ENTRY_BYTES = 64 * 1024
#: How long one blocking read waits before the loop checks for shutdown.
BLOCK_S = 1.0


def parse_entry(raw: bytes) -> Call:
    """Validate one inbox entry (flat form or seed call object)."""
    if len(raw) > MAX_ENTRY_BYTES:
        raise InvalidCall(f"entry is {len(raw)} bytes, more than {MAX_ENTRY_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCall("entry is not UTF-8 text") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidCall(f"entry is not valid JSON ({exc.msg} at position {exc.pos})") from None
    except RecursionError:
        raise InvalidCall("entry is nested too deep") from None
    return Call.parse(obj)


_KEY_FIELD = re.compile(r'("key"\s*:\s*)"(?:[^"\\]|\\.)*"')


def redact_key(text: str, key: str | None) -> str:
    """Hide the API key in text we keep (someone may LPUSH a whole seed request body)."""
    text = _KEY_FIELD.sub(r'\1"***"', text)
    if key:
        for form in {key, json.dumps(key)[1:-1]}:
            text = text.replace(form, "***")
    return text


class Bridge:
    """Moves inbox entries into the queue, one at a time, safely."""

    def __init__(self, producer: Producer, inbox_key: str) -> None:
        self.producer = producer
        self.client: redis.Redis = producer.client
        self.inbox = inbox_key
        self.processing = f"{inbox_key}:processing"
        self.dead = DeadLetters(self.client, producer.settings.prefix, producer.clock)
        self.moved = 0
        self.invalid = 0
        key = producer.settings.api_key
        self.key = key.reveal() if key else None

    def recover(self) -> int:
        """Put entries a crashed bridge left in the processing list back at the inbox head."""
        n = 0
        while self.client.lmove(self.processing, self.inbox, "LEFT", "RIGHT") is not None:
            n += 1
        if n:
            log.warning("recovered %d inbox entries left in %s", n, self.processing)
        return n

    def step(self, block_s: float = BLOCK_S) -> bool:
        """Move one entry; False when the inbox stayed empty for ``block_s``."""
        raw = self.client.blmove(self.inbox, self.processing, block_s, "RIGHT", "LEFT")  # type: ignore[arg-type]
        if raw is None:
            return False
        self.handle(raw if isinstance(raw, bytes) else str(raw).encode())
        return True

    def handle(self, raw: bytes) -> None:
        take = (self.processing, raw)
        try:
            call = parse_entry(raw)
            self.producer.enqueue(call, "inbox", take_from=take)  # type: ignore[arg-type]
        except QueueUnavailable:
            raise  # Redis trouble: the entry stays in the processing list, recovered later
        except Exception as exc:  # any entry that is not a call must not block the inbox
            message = str(exc) if isinstance(exc, InvalidCall) else (
                f"entry could not be read as a call ({type(exc).__name__})")
            text = redact_key(raw.decode("utf-8", errors="replace"), self.key)
            self.dead.bury_invalid(text, message, "inbox", take_from=take)  # type: ignore[arg-type]
            self.invalid += 1
            log.warning("inbox entry is not a valid call (%s); kept as a dead letter", message)
            return
        self.moved += 1

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; rides out Redis outages."""
        self.recover()
        while not stop.is_set():
            try:
                self.step()
            except (redis.RedisError, QueueUnavailable) as exc:
                # Down or refusing writes (full): the entry is safe in the processing list.
                log.warning("Redis unavailable (%s); retrying", type(exc).__name__)
                stop.wait(1.0)
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    self.recover()


def main_loop(producer: Producer, inbox_key: str, stop: threading.Event) -> None:
    """Entry point of the ``bridge`` process."""
    bridge = Bridge(producer, inbox_key)
    log.info("bridge: moving %s into the queue", inbox_key)
    started = time.time()
    bridge.run(stop)
    log.info("bridge: stopped after %.0fs: %d calls queued, %d invalid entries kept as "
             "dead letters", time.time() - started, bridge.moved, bridge.invalid)
