"""The web app's Flask error handlers: the v1 door's plain text, problem+json under ``/v2/``.

One named handler per case (413, 404, 405, a compressed body, anything unexpected);
`install` registers them all.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse

from dispatcher.http import doorrules, passthrough
from dispatcher.http.ingest import (
    MAX_BODY_BYTES,
    Asked,
    Door,
    Reply,
    door,
    flask_asked,
    plain,
    plain_reply,
    to_response,
)

# A stable logger name operators filter on (kept from before the move into http/).
log = logging.getLogger("dispatcher.web")

#: The v1 text of a body over `MAX_BODY_BYTES`.
TOO_LARGE = f"REQUEST TOO LARGE: at most {MAX_BODY_BYTES} bytes"


def _v2() -> bool:
    return request.path.startswith("/v2/")


def _title(exc: Any, status: int) -> str:
    name = getattr(exc, "name", None)
    return str(name) if name else str(status)


def too_large(exc: Any) -> Response:
    """413: the body is over `MAX_BODY_BYTES` (the WSGI server's cap is larger)."""
    if _v2():
        return door().problem(413, _title(exc, 413), TOO_LARGE)
    return plain(TOO_LARGE, 413)


def not_found(exc: Any) -> Response:
    """404: no route; first, a request of the CAD's shapes is passed through to the CAD
    (`dispatcher.http.passthrough`)."""
    try:
        forwarded = passthrough.forward()
    except doorrules.Unsupported as refused:
        return unsupported(refused)
    except RequestEntityTooLarge as refused:
        return too_large(refused)
    if forwarded is not None:
        return forwarded
    if _v2():
        return door().problem(404, _title(exc, 404), "NOT FOUND")
    return plain("NOT FOUND", 404)


def not_allowed(exc: MethodNotAllowed) -> Response:
    """405, naming the methods the path allows."""
    allow = ", ".join(sorted(exc.valid_methods or []))
    if _v2():
        return door().problem(405, "Method Not Allowed", f"use {allow}", Allow=allow)
    return plain("METHOD NOT ALLOWED", 405, Allow=allow)


def unsupported(exc: doorrules.Unsupported) -> Response:
    """415: a compressed body (``Content-Encoding``)."""
    safe = door().safe
    text = f"UNSUPPORTED CONTENT ENCODING {exc}: send the body uncompressed"
    if _v2():
        return door().problem(415, "Unsupported Media Type", safe(text))
    return plain(safe(text), 415)


def internal(exc: Exception) -> BaseResponse:
    """500 with a trace id (the traceback is logged, redacted); other HTTP errors as is."""
    if isinstance(exc, HTTPException):  # other 4xx raised by Flask/Werkzeug
        return exc.get_response()
    return to_response(internal_reply(door(), flask_asked(), exc))


def internal_reply(d: Door, asked: Asked, exc: BaseException) -> Reply:
    """`internal`'s 500 on any request (the lean path's too, `dispatcher.http.lean`)."""
    trace = uuid.uuid4().hex
    detail = "".join(traceback.format_exception(exc))
    log.error("http: internal error (trace %s): %s", trace, d.safe(detail, 20_000))
    if asked.path.startswith("/v2/"):
        return d.problem_reply(asked, 500, "Internal Server Error",
                               f"internal error (trace {trace})")
    return plain_reply(f"INTERNAL ERROR (trace {trace})", 500)


def install(app: Flask) -> None:
    """Register every handler above on `app`."""
    app.register_error_handler(413, too_large)
    app.register_error_handler(404, not_found)
    app.register_error_handler(405, not_allowed)
    app.register_error_handler(doorrules.Unsupported, unsupported)
    app.register_error_handler(Exception, internal)
