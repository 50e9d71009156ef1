"""One real HTTP request for the FiveM harness (Lua has no HTTP client of its own).

Usage: ``python fivem_http.py REQUEST.json`` where the file holds
``{"url", "method", "data", "headers"}``, the table FiveM's PerformHttpRequest builds.
Prints one JSON object: ``{"status", "body", "headers", "error"}``; status 0 and an
error text when no HTTP answer came back. Turning that into FiveM's callback arguments
is the harness's job, so all FiveM behaviour lives in one place.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

#: FXServer gives up on a request that has not answered within 5 s (timeoutNoResponse).
TIMEOUT_S = 5.0


def perform(request: dict) -> dict:
    req = urllib.request.Request(
        request["url"], data=request.get("data", "").encode(), method=request.get("method", "GET"),
        headers=request.get("headers") or {},
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return {"status": resp.status, "body": resp.read().decode("utf-8", "replace"),
                    "headers": dict(resp.headers.items()), "error": None}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode("utf-8", "replace"),
                "headers": dict(exc.headers.items()), "error": None}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"status": 0, "body": None, "headers": {}, "error": f"{reason}"}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        request = json.load(fh)
    print(json.dumps(perform(request)))


if __name__ == "__main__":
    main()
