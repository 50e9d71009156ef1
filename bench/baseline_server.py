"""The doors' plain baselines, run as their own processes by bench/doors.py.

``server``: the same WSGI server as ours (waitress, 16 threads) with a trivial app: read
the body, parse the JSON, LPUSH it on a Redis list, answer 200. What an HTTP door costs
without validation, idempotency, records or Flask.

``mover``: a bare loop that moves entries from one Redis list to another (RPOP, then
LPUSH; BRPOP when the source is empty): what an inbox bridge costs without validation
and records.

    python bench/baseline_server.py server REDIS_URL PORT [--noop]
    python bench/baseline_server.py mover REDIS_URL SRC DST
"""

from __future__ import annotations

import itertools
import json
import sys

import redis


def server(url: str, port: int, noop: bool) -> None:
    from waitress import serve

    client = redis.Redis.from_url(url)
    counter = itertools.count(1)

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        if not noop:
            obj = json.loads(body)
            client.lpush("bench:plain-door", json.dumps(obj["data"][0]))
        answer = f"EMERGENCY CALL QUEUED ID: {next(counter)}".encode()
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                                  ("Content-Length", str(len(answer)))])
        return [answer]

    serve(app, host="127.0.0.1", port=port, threads=16, _quiet=True)


def mover(url: str, src: str, dst: str) -> None:
    client = redis.Redis.from_url(url)
    while True:
        value = client.rpop(src)
        if value is None:
            popped = client.brpop([src], timeout=1)
            if popped is None:
                continue
            value = popped[1]
        client.lpush(dst, value)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]), "--noop" in sys.argv)
    elif sys.argv[1] == "mover":
        mover(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)
