"""The one redaction of secrets: what we print, log, answer or keep never holds one.

The secrets are the ones we are given: the CAD API key, the operator token, the
notification webhook URL (a webhook's path is its credential) and any credential in
REDIS_URL (``user:password@`` or ``?password=``). Each is hidden in its plain form and
in the forms text takes on its way to us: JSON escapes (``\\u0053``, in any mix with
plain characters) and URL encoding (``%53``). Text whose direct forms miss a secret is
checked once more decoded; if the decoded copy holds one, the decoded copy is what is
shown, redacted. URLs with userinfo or a ``password=`` query lose those parts whatever
the secret list says (a library may print a URL we never configured).

`install` puts one `RedactingFilter` on every log record of the process (a record
factory, so records of libraries and of handlers added later, Celery's included, are
covered) and on the root logger's handlers, and redacts uncaught tracebacks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from dispatcher.display import safe_lines

if TYPE_CHECKING:
    from dispatcher.settings import Settings

MASK = "***"
#: Shorter secrets are only hidden inside URLs: masking a two-letter password in free
#: text would mangle every line without protecting anything.
MIN_FREE_TEXT_CHARS = 4

_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\([\"\\/bfnrt])")
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# scheme://user:password@  (any scheme: redis, rediss, amqp, http...)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^\s:/@?#]*):([^\s/?#]*)@")
# ?password=...  &username=... (redis-py takes both from the query)
# (a trailing ":", "," or "." before a space is the sentence's, not the password's)
_QUERY_CREDENTIAL = re.compile(
    r"([?&](?:password|passwd|pass|pwd)=)[^&#\s'\"]*?(?=[:,.;)]?(?:\s|$|[&#'\"]))", re.I)


def _json_unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return chr(int(m.group(1), 16))
        ch = m.group(2)
        return _SIMPLE.get(ch, ch)

    out = _JSON_ESCAPE.sub(one, text)
    # A pair of escaped surrogates is one character.
    return out.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _views(text: str) -> Iterable[str]:
    """Decoded copies of text: JSON escapes undone, URL encoding undone, both (twice)."""
    view = text
    for _ in range(3):
        changed = False
        if "\\" in view:
            decoded = _json_unescape(view)
            if decoded != view:
                view, changed = decoded, True
                yield view
        if "%" in view:
            decoded = unquote(view)
            if decoded != view:
                view, changed = decoded, True
                yield view
        if not changed:
            return


def _forms(secret: str) -> list[str]:
    """The encodings of one secret that text can hold it in (longest first)."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             quote(secret, safe=""), quote(secret), quote_plus(secret),
             repr(secret)[1:-1]}
    escaped = "".join(f"\\u{ord(ch):04x}" for ch in secret)  # every character escaped
    forms.update({escaped, escaped.upper().replace("\\U", "\\u")})
    return sorted(forms, key=len, reverse=True)


def redact_url(url: str) -> str:
    """A URL without its credentials: ``redis://user:***@host/0?password=***``."""
    url = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", url)
    return _QUERY_CREDENTIAL.sub(lambda m: m.group(1) + MASK, url)


def sha256(raw: bytes | str) -> str:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    return hashlib.sha256(data).hexdigest()


def withheld_note(raw: bytes | str, what: str = "the API key") -> str:
    """What is kept instead of a text that held the API key (or another secret)."""
    return f"raw text withheld: it contained {what} (SHA-256 of the entry: {sha256(raw)})"


class Redactor:
    """Hides every given secret, in every form we can decode, in any text."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_FREE_TEXT_CHARS},
                              key=len, reverse=True)
        self._forms = [f for s in self.secrets for f in _forms(s)]

    def holds(self, text: str) -> bool:
        """Whether text carries a secret, as written or in a form we can decode."""
        for form in self._forms:
            if form in text:
                return True
        if "\\" not in text and "%" not in text:  # nothing to decode (the common case)
            return False
        return any(s in view for view in _views(text) for s in self.secrets)

    def __call__(self, text: str) -> str:
        """Text with every secret (and every URL credential) replaced by ``***``."""
        if self.secrets:
            for form in self._forms:
                if form in text:
                    text = text.replace(form, MASK)
            if "\\" in text or "%" in text:
                views = list(_views(text))  # decoded once, for the check and the copy
                if any(secret in view for view in views for secret in self.secrets):
                    # A mix of escaped and plain characters: show the decoded copy instead.
                    text = views[-1]
                    for secret in self.secrets:
                        text = text.replace(secret, MASK)
        if "://" in text or "=" in text:
            text = redact_url(text)
        return text

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        return cls(secrets_of(settings))


def secrets_of(settings: Settings) -> list[str]:
    """Every secret the settings hold, as plain strings."""
    found: list[str | None] = []
    for secret in (settings.api_key, settings.ops_token, settings.previous_key):
        found.append(secret.reveal() if secret else None)
    if settings.notify_url:
        url = settings.notify_url.reveal()
        parts = urlsplit(url)
        found += [url, parts.path + (f"?{parts.query}" if parts.query else ""), parts.query]
    found += redis_credentials(settings.redis_url)
    return [s for s in found if s and s != "/"]


def redis_credentials(url: str) -> list[str]:
    """The password (userinfo or query) of a Redis URL."""
    try:
        from dispatcher.redisconn import parse_url

        options = parse_url(url)
    except (ValueError, TypeError):
        return []
    return [str(options["password"])] if options.get("password") else []


def holds(value: Any, redactor: Redactor) -> bool:
    """Whether any string (member name or value) of a parsed JSON value holds a secret."""
    strings: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    # One look at all strings at once (NUL cannot be part of a secret we are given).
    return redactor.holds("\0".join(strings))


@functools.lru_cache(maxsize=8)
def _for(secret: str) -> Redactor:
    return Redactor([secret])


def holds_secret(value: Any, secret: str | None) -> bool:
    """Whether a parsed JSON value holds one secret (the API key) in any decodable form."""
    return bool(secret) and holds(value, _for(secret))


class LineRedactor:
    """Makes any text safe to answer or log: no secret, valid UTF-8, one short line."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self.redactor = Redactor(secrets)

    def __call__(self, text: str, limit: int = 300) -> str:
        text = _current(self.redactor(text))  # the given secrets and the process's own
        # Unpaired surrogates (from "\\ud800" escapes) cannot be encoded; control
        # characters would break a header-like text line.
        text = text.encode("utf-8", "replace").decode("utf-8")
        text = "".join(ch if ch >= " " or ch == "\t" else " " for ch in text)
        if len(text) > limit:
            text = text[:limit] + "..."
        return _current(self.redactor(text))  # a cut could not re-create one, but be sure


# -- every process's output ------------------------------------------------------------------

#: The redactor of this process (set by `install`); before it, URLs lose credentials only.
_current = Redactor([])
_lock = threading.Lock()


def current() -> Redactor:
    return _current


def text(value: object) -> str:
    """Any value as text fit to print (the process's secrets hidden)."""
    return _current(str(value))


class RedactingFilter(logging.Filter):
    """Redacts a record's final message, its exception text and stack (once per record)."""

    def __init__(self, redactor: Callable[[], Redactor] = current) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        redact = self._redactor()
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: keep what we can
            message = str(record.msg)
        # A caller's text may reach a log line: a terminal tailing it must not obey it.
        record.msg, record.args = safe_lines(redact(message)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:  # an exception's text may quote a caller's too
            record.exc_text = safe_lines(redact(record.exc_text))
            record.exc_info = None  # the text above is what handlers print
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._redacted = True
        return True


_FILTER = RedactingFilter()


def install(settings: Settings) -> Redactor:
    """Redact every log record, uncaught traceback and thread traceback of this process."""
    global _current
    with _lock:
        _current = Redactor.from_settings(settings)
        factory = logging.getLogRecordFactory()
        if not getattr(factory, "_dispatcher_redacts", False):
            def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = factory(*args, **kwargs)
                _FILTER.filter(record)
                return record

            redacting_factory._dispatcher_redacts = True  # type: ignore[attr-defined]
            logging.setLogRecordFactory(redacting_factory)
        add_to_handlers()
        if not getattr(sys.excepthook, "_dispatcher_redacts", False):
            sys.excepthook = _excepthook
            threading.excepthook = _thread_excepthook
    return _current


def also(secrets: Iterable[str | None]) -> Redactor:
    """Hide these secrets too (every community's keys, once its file is read)."""
    global _current
    with _lock:
        _current = Redactor([*_current.secrets, *secrets])
    return _current


def add_to_handlers(logger: logging.Logger | None = None) -> None:
    """Put the filter on a logger's handlers (default the root's); idempotent."""
    for handler in (logger or logging.getLogger()).handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def _excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    sys.stderr.write(_current("".join(traceback.format_exception(kind, exc, tb))))


_excepthook._dispatcher_redacts = True  # type: ignore[attr-defined]


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread else "?"
    sys.stderr.write(f"Exception in thread {name}:\n" + _current("".join(
        traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))))
