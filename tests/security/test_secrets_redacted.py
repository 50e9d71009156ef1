"""Row "a Redis password in the URL's query is printed" (and every other secret): each
process started with every secret set, made to fail (Redis unreachable with a password
in the URL's query; a CAD that echoes the key escaped and the webhook URL), prints and
keeps none of them. Real processes, real Redis, a hostile CAD over HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
import redis

from tests.conftest import API_KEY, Proc, base_env, free_port, run_cli, wait_for
from tests.security.test_key_in_entries import _dump

pytestmark = pytest.mark.integration

OPS_TOKEN = "ops-SECRET-token-5d2f8e1a9b"
NOTIFY_PATH = "/services/T0001/B0002/notify-SECRET-4f1c9a77"
NOTIFY_URL = f"https://hooks.example.invalid{NOTIFY_PATH}"
REDIS_PASSWORD = "pw-SECRET-redis-77a1c3"
SECRETS = [API_KEY, OPS_TOKEN, NOTIFY_PATH, REDIS_PASSWORD]


def _forms(secret: str) -> list[str]:
    escaped = secret.replace("S", "\\u0053")
    return [secret, quote(secret, safe=""), escaped, json.dumps(secret)[1:-1]]


def leaks(text: str) -> list[str]:
    return [form for secret in SECRETS for form in _forms(secret) if form in text]


def secret_env(redis_url: str, **extra: object) -> dict[str, str]:
    return base_env(redis_url, None, DISPATCHER_OPS_TOKEN=OPS_TOKEN,
                    DISPATCHER_NOTIFY_URL=NOTIFY_URL, SONORAN_API_URL="http://127.0.0.1:9",
                    PORT=free_port(), **extra)


def test_no_process_prints_a_secret_when_redis_is_unreachable(
    procs: Callable[..., Proc],
) -> None:
    env = secret_env(f"redis://127.0.0.1:{free_port()}/0?password={REDIS_PASSWORD}")
    outputs: dict[str, str] = {}
    for command in (["web"], ["scheduler"], ["bridge"], ["stats"], ["dlq", "list"],
                    ["status", "01ABC"], ["dlq", "show", "01ABC"], ["run"],
                    ["enqueue", "--caller", "C", "--location", "L", "--description", "D"]):
        done = run_cli(command, env, timeout=90)
        assert done.returncode != 0, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        outputs[" ".join(command)] = done.stdout + done.stderr
    # The worker keeps trying to reach its broker (Celery logs each failure with the URL).
    worker = procs(["worker"], env)
    wait_for(lambda: "Cannot connect to" in worker.output() or not worker.alive(), 60,
             message=f"the worker's connection error\n{worker.output()}")
    time.sleep(1)
    outputs["worker"] = worker.output()
    assert "Cannot connect to redis://" in outputs["worker"], outputs["worker"]
    assert "cannot reach Redis at redis://127.0.0.1" in outputs["web"], outputs["web"]
    for name, text in outputs.items():
        assert leaks(text) == [], (name, leaks(text), text)


class _HostileCad(BaseHTTPRequestHandler):
    """Answers every request with 500 and a body that echoes the key JSON-escaped, the key
    URL-encoded and the webhook URL (a proxy's error page that quotes its request)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": "upstream refused key "
                                    + API_KEY.replace("S", "\\u0053") + " / "
                                    + quote(API_KEY, safe="") + " hook " + NOTIFY_URL})
        data = body.encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hostile_cad() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileCad)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_cad_echoing_the_key_escaped_leaves_no_secret_in_logs_redis_or_output(
    redis_url: str, rclient: redis.Redis, hostile_cad: str, procs: Callable[..., Proc],
) -> None:
    env = secret_env(redis_url)
    env["SONORAN_API_URL"] = hostile_cad
    worker = procs(["worker", "--concurrency", "2"], env)
    enqueued = run_cli(["enqueue", "--caller", "C", "--location", "L", "--description", "D"],
                       env)
    assert enqueued.returncode == 0, enqueued.stderr
    call_id = enqueued.stdout.strip()

    def attempted() -> dict | None:
        data = json.loads(run_cli(["status", call_id, "--json"], env).stdout)
        return data if data["attempts"] >= 1 and data.get("last_error") else None

    status = wait_for(attempted, 60, message=f"a failed attempt\n{worker.output()}")
    text = json.dumps(status, ensure_ascii=False) + run_cli(["status", call_id], env).stdout
    assert "upstream refused key" in text, text  # the answer is kept, redacted
    assert leaks(text) == [], text
    assert leaks(_dump(rclient).decode(errors="replace")) == []
    assert leaks(worker.output()) == [], worker.output()
