"""CPU per request of the web door's WSGI app alone, in process: no HTTP server, no sockets
but Redis's, so the figure is the app's own and little moved by the machine's load.

Three apps get the same v1 ``POST /emergency/call_911`` environ (one call), in turns of
``--batch`` requests, ``--rounds`` times; each row is the median over the rounds of the
process CPU time per request (``time.process_time``):

- ``lean``: the app as served (`dispatcher.http.lean` in front of Flask);
- ``flask``: the same app's Flask callable behind the lean path (what every request
  cost before it);
- ``plain``: bench/baseline_server.py's trivial app (parse, ``LPUSH``, answer).

A private redis-server (`common.private_redis`); nothing drains the calls.

    .venv/bin/python bench/door_app.py [--rounds 7] [--batch 300] [--json]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from common import API_KEY, COMMUNITY, emit, machine, med, private_redis, ratio, rnd, seed_call

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def _environ(body: bytes) -> dict[str, Any]:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/emergency/call_911", "SCRIPT_NAME": "",
            "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5555",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
            "HTTP_HOST": "127.0.0.1:8080", "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
            "wsgi.input_terminated": True}


def _batch(app: WSGIApp, body: bytes, n: int) -> float:
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    cpu = time.process_time()
    for _ in range(n):
        out = app(_environ(body), start_response)
        b"".join(out)
        close = getattr(out, "close", None)
        if close is not None:
            close()
    spent = time.process_time() - cpu
    assert all(s == "200 OK" for s in statuses), set(statuses)
    return spent * 1e6 / n


def _plain_app(url: str) -> WSGIApp:
    client = redis.Redis.from_url(url)
    counter = itertools.count(1)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        obj = json.loads(environ["wsgi.input"].read(length))
        client.lpush("bench:plain-door", json.dumps(obj["data"][0]))
        answer = f"EMERGENCY CALL QUEUED ID: {next(counter)}".encode()
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                                  ("Content-Length", str(len(answer)))])
        return [answer]

    return app


def measure(url: str, rounds: int, batch: int) -> dict[str, Any]:
    os.environ.update(REDIS_URL=url, SONORAN_COMMUNITY_ID=COMMUNITY, SONORAN_API_KEY=API_KEY,
                      DISPATCHER_MAX_BACKLOG="0")
    from dispatcher.http.app import create_app
    from dispatcher.http.lean import LeanDoor
    from dispatcher.settings import Settings

    app = create_app(Settings.from_env())
    lean = app.wsgi_app
    assert isinstance(lean, LeanDoor)
    apps: dict[str, WSGIApp] = {"lean": app, "flask": lean.inner, "plain": _plain_app(url)}
    body = json.dumps({"id": COMMUNITY, "key": API_KEY, "type": "CALL_911",
                       "data": [seed_call(1)]}).encode()
    for wsgi in apps.values():  # warm: imports, pools, scripts
        _batch(wsgi, body, 100)
    per: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, wsgi in apps.items():
            per[name].append(_batch(wsgi, body, batch))
    out: dict[str, Any] = {name: {"cpu_us_per_request": rnd(med(v), 1),
                                  "rounds": [rnd(x, 1) for x in v]} for name, v in per.items()}
    door = app.extensions["dispatcher.door"]
    for d in door.doors.values():  # before the private Redis stops
        d.outcomes.stop()
    out["lean_vs_plain"] = ratio(med(per["lean"]), med(per["plain"]))
    out["flask_vs_plain"] = ratio(med(per["flask"]), med(per["plain"]))
    return out


def render(result: dict[str, Any]) -> str:
    apps = result["apps"]
    lines = ["WSGI app alone, CPU us per request (median of rounds)"]
    for name in ("flask", "lean", "plain"):
        lines.append(f"  {name:6} {apps[name]['cpu_us_per_request']:8.1f}")
    lines.append(f"  lean x{apps['lean_vs_plain']} plain, flask x{apps['flask_vs_plain']} plain")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-door-app-"))
    try:
        with private_redis(folder) as server:
            result = {"figure": "door-app",
                      "command": f"bench/door_app.py --rounds {args.rounds} --batch {args.batch}",
                      "machine": machine(), "apps": measure(server.url, args.rounds, args.batch)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
