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
from collections.abc import Callable

import redis

from dispatcher import scripts
from dispatcher.call import Call
from dispatcher.deadletters import DeadLetters
from dispatcher.errors import InvalidCall, QueueFull, QueueUnavailable
from dispatcher.producer import Producer
from dispatcher.redact import Redactor, withheld_note
from dispatcher.redisconn import UNREACHABLE

log = logging.getLogger("dispatcher.bridge")

#: Largest inbox entry accepted as a call; larger ones become dead letters ``invalid``.
MAX_ENTRY_BYTES = 64 * 1024
#: How long one blocking read waits before the loop checks for shutdown.
BLOCK_S = 1.0
#: Most entries moved and recorded in one round trip each way.
BATCH = 200
#: Pause after the backlog cap refused a batch (the entries wait in the inbox).
FULL_WAIT_S = 2.0
#: While the cap refuses entries, one log line per this many seconds.
FULL_LOG_EVERY_S = 60.0

def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def parse_entry(raw: bytes) -> Call:
    """Validate one inbox entry (flat form or seed call object)."""
    return parse_addressed(raw)[0]


def parse_addressed(raw: bytes) -> tuple[Call, str | None]:
    """Validate one inbox entry: its call, and the community its ``"community"`` member
    names (None: the default), which is ours, not the CAD's."""
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
    community = None
    if isinstance(obj, dict) and "community" in obj:
        obj = dict(obj)
        named = obj.pop("community")
        if named is not None and (not isinstance(named, str) or not named.strip()):
            raise InvalidCall("community must be the name of a community (text)")
        community = named.strip() if isinstance(named, str) else None
    return Call.parse(obj), community


_KEY_FIELD = re.compile(r'("key"\s*:\s*)"(?:[^"\\]|\\.)*"')


def redact_key(text: str, redactor: Redactor) -> str:
    """Hide keys in text we keep (someone may LPUSH a whole seed request body)."""
    return redactor(_KEY_FIELD.sub(r'\1"***"', text))


def kept_text(raw: bytes, redactor: Redactor, key_check: Redactor) -> str:
    """What a dead letter keeps of an invalid entry: its text, or a note and its hash.

    An entry holding the API key (or another secret we are given) in any form we can
    decode (plain, JSON escapes, URL encoding) is not kept at all: a redaction could miss
    a form, a withheld text cannot.
    """
    text = raw.decode("utf-8", errors="replace")
    if key_check.holds(text):
        return withheld_note(raw)
    if redactor.holds(text):
        return withheld_note(raw, "a configured secret")
    return redact_key(text, redactor)


#: Dead-letter error of an entry that carries the API key (its text is withheld).
KEY_IN_ENTRY = "the entry contains the API key; it was not queued and its text is not kept"


class _OncePerMinute:
    """A log line for the first event, then at most one per `FULL_LOG_EVERY_S` with the
    count of those not logged (a flood of junk entries writes one line a minute)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.logged_at: float | None = None
        self.unlogged = 0

    def due(self) -> int | None:
        """None: count this event silently; else log it, with this many left unlogged."""
        now = self.clock()
        if self.logged_at is not None and now - self.logged_at < FULL_LOG_EVERY_S:
            self.unlogged += 1
            return None
        skipped, self.unlogged, self.logged_at = self.unlogged, 0, now
        return skipped


class Bridge:
    """Moves inbox entries into the queue, one at a time, safely."""

    def __init__(self, producer: Producer, inbox_key: str) -> None:
        self.producer = producer
        self.client: redis.Redis = producer.client
        self.inbox = inbox_key
        self.processing = f"{inbox_key}:processing"
        home = producer.home().settings  # an entry that names no community is the default's
        self.dead = DeadLetters(self.client, home.prefix, producer.clock,
                                max_invalid=producer.settings.max_invalid)
        self._take = scripts.register(self.client, "inbox_take.lua")
        self.moved = 0
        self.invalid = 0
        self._full_since: float | None = None
        self._full_logged = 0.0
        self._full_refusals = 0
        self._invalid_log = _OncePerMinute()
        self.redactor = Redactor.from_settings(producer.settings)
        self.key_check = Redactor(producer.keys())

    def recover(self, quiet: bool = False) -> int:
        """Put entries a crashed bridge left in the processing list back at the inbox head."""
        n = 0
        while self.client.lmove(self.processing, self.inbox, "LEFT", "RIGHT") is not None:
            n += 1
        if n and not quiet:
            log.warning("recovered %d inbox entries left in %s", n, self.processing)
        return n

    def step(self, block_s: float = BLOCK_S) -> bool:
        """Move a batch of entries; False when the inbox stayed empty for ``block_s``."""
        first = self.client.blmove(self.inbox, self.processing, block_s, "RIGHT", "LEFT")  # type: ignore[arg-type]
        if first is None:
            return False
        more = self._take(keys=[self.inbox, self.processing], args=[BATCH - 1])
        self.handle_many([_bytes(first), *(_bytes(v) for v in more)])
        return True

    def handle_many(self, raws: list[bytes]) -> None:
        """Record the valid entries in one round trip per community; keep the others as
        dead letters."""
        groups: dict[str | None, list[tuple[bytes, Call]]] = {}
        for raw in raws:
            try:
                call, community = parse_addressed(raw)
                target = self.producer.of(community)  # InvalidCall: no such community
            except Exception as exc:  # any entry that is not a call must not block the inbox
                self._bury(raw, exc)
                continue
            # The key in any form we can decode (Call.parse undid the JSON escapes; the
            # raw text may hold it URL-encoded) is refused, as the HTTP door refuses it.
            if self.key_check.holds(raw.decode("utf-8", errors="replace")):
                self._bury(raw, InvalidCall(KEY_IN_ENTRY))
                continue
            groups.setdefault(target.settings.community, []).append((raw, call))
        for community, valid in groups.items():
            self._record(self.producer.of(community), valid)

    def _record(self, producer: Producer, valid: list[tuple[bytes, Call]]) -> None:
        try:
            producer.enqueue_many(
                [call for _, call in valid], "inbox",
                take_from=[(self.processing, raw) for raw, _ in valid],  # type: ignore[misc]
            )
        except QueueUnavailable:
            raise  # Redis trouble: the entries stay in the processing list, recovered later
        except QueueFull as exc:
            # Those recorded before the cap was reached left the processing list; the
            # others stay there and go back to the inbox (see run).
            self.moved += sum(1 for i in getattr(exc, "accepted", []) if i)
            raise
        except InvalidCall:
            # One call of the batch was refused whole (it carries the API key): sort the
            # batch out entry by entry.
            for raw, call in valid:
                try:
                    producer.enqueue(call, "inbox", take_from=(self.processing, raw))  # type: ignore[arg-type]
                    self.moved += 1
                except InvalidCall as exc:
                    self._bury(raw, exc)
            return
        self.moved += len(valid)
        if self._full_since is not None:
            log.warning("bridge: the backlog is below DISPATCHER_MAX_BACKLOG again after "
                        "%.0fs; moving the inbox", time.monotonic() - self._full_since)
            self._full_since = None

    def _bury(self, raw: bytes, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, InvalidCall) else (
            f"entry could not be read as a call ({type(exc).__name__})")
        message = self.redactor(message)  # an error may name what it found (a field)
        text = kept_text(raw, self.redactor, self.key_check)
        self.dead.bury_invalid(text, message, "inbox", take_from=(self.processing, raw))  # type: ignore[arg-type]
        self.invalid += 1
        skipped = self._invalid_log.due()
        if skipped is not None:
            more = f" ({skipped} more in the last minute, not logged)" if skipped else ""
            log.warning("inbox entry is not a valid call (%s); kept as a dead letter%s",
                        message, more)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; rides out Redis outages."""
        self.recover()
        while not stop.is_set():
            try:
                self.step()
            except QueueFull as exc:
                self._queue_full(exc)
                stop.wait(FULL_WAIT_S)
                with contextlib.suppress(*UNREACHABLE):
                    self.recover(quiet=True)  # the refused entries wait in the inbox, in order
            except (redis.RedisError, QueueUnavailable) as exc:
                # Down or refusing writes (full): the entry is safe in the processing list.
                log.warning("Redis unavailable (%s); retrying", type(exc).__name__)
                stop.wait(1.0)
                with contextlib.suppress(*UNREACHABLE):
                    self.recover()


    def _queue_full(self, exc: QueueFull) -> None:
        """One log line when the cap starts refusing, then one a minute with a count."""
        now = time.monotonic()
        self._full_refusals += 1
        if self._full_since is None:
            self._full_since = now
        elif now - self._full_logged < FULL_LOG_EVERY_S:
            return
        log.warning("bridge: %s; inbox entries wait in the inbox (%d refused batch(es) "
                    "in %.0fs)", exc, self._full_refusals, now - self._full_since)
        self._full_logged = now
        self._full_refusals = 0


def main_loop(producer: Producer, inbox_key: str, stop: threading.Event) -> None:
    """Entry point of the ``bridge`` process."""
    bridge = Bridge(producer, inbox_key)
    log.info("bridge: moving %s into the queue", inbox_key)
    started = time.time()
    bridge.run(stop)
    log.info("bridge: stopped after %.0fs: %d calls queued, %d invalid entries kept as "
             "dead letters", time.time() - started, bridge.moved, bridge.invalid)
