"""The scripted demo of `dispatcher run --demo`: a CAD outage and a rotated key, nothing lost.

Calls go in through all three doors (the Python API, the HTTP endpoint with the seed's
own body, the Redis inbox). The simulator plays the CAD: first healthy, then refusing
connections, then rejecting the old API key. The operator's fix is played too: the new
key is configured, the worker restarted, and the dead letters replayed.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from typing import Any

import redis
import requests

from dispatcher.call import Call
from dispatcher.cli.embedded import EmbeddedRedis, free_port, port_free
from dispatcher.cli.processes import stop_on_signals
from dispatcher.cli.runner import PROCESSES, STATE_DIR, Supervisor
from dispatcher.deadletters import DeadLetters, Filter
from dispatcher.producer import Producer
from dispatcher.records import Records
from dispatcher.redisconn import connect
from dispatcher.settings import Secret, Settings
from dispatcher.simulator import CadSimulator

DEMO_COMMUNITY = "demo-community"
DEMO_KEY = "demo-key-2026"
ROTATED_KEY = "demo-key-rotated"
#: Faster than the real v1 guidance (1/s) so the demo takes a minute, not several.
DEMO_RATE = 5.0


class Demo:
    """Plays the scenario against running processes and reports as it goes."""

    def __init__(self, settings: Settings, sim: CadSimulator, supervisor: Supervisor,
                 stop: threading.Event, calls: int) -> None:
        self.settings = settings
        self.sim = sim
        self.supervisor = supervisor
        self.stop = stop
        self.calls = max(calls, 6)
        self.client: redis.Redis = connect(settings)
        self.records = Records(self.client, settings.prefix)
        self.dead = DeadLetters(self.client, settings.prefix)
        self.producer = Producer(settings, client=self.client)
        self.tty = sys.stdout.isatty()
        self.started = time.time()
        self.max_oldest = 0.0
        self.failure = ""
        self.base = self.records.stats()

    def say(self, text: str) -> None:
        if self.tty:
            print("\r\033[K", end="")
        print(text, flush=True)

    def progress(self, phase: str, s: dict[str, Any] | None = None) -> dict[str, Any]:
        """Print one progress line from ``s`` (the stats just read), or read them."""
        s = self.records.stats() if s is None else s
        self.max_oldest = max(self.max_oldest, s["oldest_age_s"] or 0.0)
        age = "-" if s["oldest_age_s"] is None else f"{s['oldest_age_s']:.1f}s"
        cad = {"closed": "up", "open": "down", "half_open": "probing"}.get(s["circuit"], "?")
        line = (f"  [{phase:>8}] queued {s['queued']:3}  scheduled {s['scheduled']:3}  "
                f"in flight {s['in_flight']:2}  delivered {self.delivered(s):3}"
                f"  dead {s['dead']:2}  CAD {cad:7}  oldest {age}")
        if self.tty:
            print("\r\033[K" + line, end="", flush=True)
        else:
            print(line, flush=True)
        return s

    def wait(self, phase: str, done: Any, timeout: float, every: float = 0.5) -> bool:
        deadline = time.time() + timeout
        last_print = 0.0
        while not self.stop.is_set():
            crashing = [n for n, c in self.supervisor.crashes.items() if c >= 3]
            if crashing:
                name = crashing[0]
                self.failure = (f"the {name} process keeps crashing: "
                                f"{self.supervisor.last_words.get(name) or 'see its log'}")
                return False
            s = self.records.stats()
            if done(s):
                self.progress(phase, s)
                if self.tty:
                    print()
                return True
            if time.time() > deadline:
                return False
            if time.time() - last_print >= (every if self.tty else 2.0):
                self.progress(phase, s)
                last_print = time.time()
            time.sleep(0.1)
        return False

    def make(self, i: int, door: str) -> None:
        call = Call.create(caller=f"Caller {i}", location=f"Route 68 / Joshua Rd #{i}",
                           description=f"Two-car collision ({door})", postal=str(300 + i),
                           plate=f"8ABC{i:03d}")
        if door == "api":
            self.producer.enqueue(call, "demo")
        elif door == "http":
            body = {"id": DEMO_COMMUNITY, "key": DEMO_KEY, "type": "CALL_911",
                    "data": [call.to_cad(self.settings.server_id)]}
            for _ in range(50):  # the web process may still be starting
                try:
                    r = requests.post(f"http://127.0.0.1:{self.settings.port}/emergency/call_911",
                                      json=body, timeout=5)
                    r.raise_for_status()
                    return
                except requests.RequestException:
                    time.sleep(0.2)
            raise RuntimeError("the web process did not answer")
        else:
            self.client.lpush(self.settings.inbox_key, json.dumps(call.to_cad()))

    def delivered(self, s: dict[str, Any]) -> int:
        return int(s["delivered"]) - int(self.base["delivered"])

    def play(self) -> int:
        n1 = self.calls // 3
        n2 = self.calls // 3
        n3 = self.calls - n1 - n2
        doors = ("api", "http", "inbox")
        print(f"Demo: the CAD simulator is at {self.sim.url}; rate limit {DEMO_RATE:g} calls/s; "
              "breaker probes every 2-4 s; process logs in .dispatcher/logs/.", flush=True)
        made = 0

        self.say(f"1. A normal evening: {n1} calls through the Python API, HTTP and the inbox.")
        for i in range(n1):
            self.make(made, doors[i % 3])
            made += 1
        if not self.wait("normal", lambda s: self.delivered(s) >= made, 120):
            return self.fail("calls were not delivered")

        self.say(f"2. The CAD goes down (connections refused); {n2} calls come in meanwhile.")
        self.sim.set_fault("refuse")
        for i in range(n2):
            self.make(made, doors[i % 3])
            made += 1
            time.sleep(0.2)
        self.wait("outage", lambda s: s["circuit"] == "open", 30)
        self.wait("outage", lambda s: False, 8)
        self.say("   The CAD is back; the backlog drains oldest first.")
        self.sim.clear_faults()
        if not self.wait("recovery", lambda s: self.delivered(s) >= made, 180):
            return self.fail("the backlog did not drain")

        self.say(f"3. The community rotates its API key; {n3} calls are refused with "
                 "INVALID API KEY and become dead letters.")
        self.sim.set_credentials(api_key=ROTATED_KEY)
        for _ in range(n3):
            self.make(made, "api")
            made += 1
        if not self.wait("new key", lambda s: s["dead"] >= n3, 60):
            return self.fail("the dead letters did not appear")
        letter = self.dead.list(Filter(reason="rejected"), limit=1)[0]
        self.say(f"   dispatcher dlq list: {n3} dead letters, e.g. {letter.id}: "
                 f"{letter.status_code} {letter.response!r} after {letter.attempts} attempt(s).")
        self.say("   The operator sets SONORAN_API_KEY to the new key, restarts the worker "
                 "and runs `dispatcher dlq replay --all`.")
        self.settings = self.settings.with_(api_key=Secret(ROTATED_KEY))
        self.supervisor.restart("worker", self.settings)
        for record in self.dead.list(Filter(reason="rejected")):
            self.dead.replay(record.id, actor="demo")
        if not self.wait("replay", lambda s: self.delivered(s) >= made and s["dead"] == 0, 120):
            return self.fail("the replayed calls were not delivered")
        return self.summary(made)

    def fail(self, why: str) -> int:
        if self.stop.is_set():
            self.say("Demo interrupted.")
            return 130
        self.say(f"Demo FAILED: {self.failure or why}. See .dispatcher/logs/ for the process "
                 "logs.")
        return 1

    def summary(self, made: int) -> int:
        s = self.records.stats()
        cad = self.sim.stats()
        elapsed = time.time() - self.started
        delivered = self.delivered(s)
        ok = delivered == made and cad["created"] == made and cad["duplicates"] == 0
        self.say("")
        self.say("Summary")
        self.say(f"  calls made ........................ {made}")
        self.say(f"  delivered (our records) ........... {delivered}")
        self.say(f"  created in the CAD ................ {cad['created']}  "
                 f"(duplicates: {cad['duplicates']})")
        self.say(f"  requests the CAD saw .............. {cad['received']}  "
                 f"(refused connections are not seen)")
        self.say(f"  retries scheduled ................. {s['retried'] - self.base['retried']}")
        self.say(f"  dead letters left ................. {s['dead']}")
        self.say(f"  oldest call waited ................ {self.max_oldest:.1f}s")
        self.say(f"  elapsed ........................... {elapsed:.1f}s")
        self.say("Nothing lost, nothing sent twice." if ok else "MISMATCH: see the figures above.")
        return 0 if ok else 1


def run_demo(settings: Settings, calls: int = 30) -> int:
    """`dispatcher run --demo`: every process on a private Redis, the simulator as the CAD."""
    # The demo never touches a Redis of yours: it runs on a private, fresh one.
    folder = STATE_DIR / "demo-redis"
    shutil.rmtree(folder, ignore_errors=True)
    embedded = EmbeddedRedis(folder, port=free_port()).start()
    settings = settings.with_(redis_url=embedded.url)
    print(f"Demo: a private embedded Redis on 127.0.0.1:{embedded.port} (data in {folder}, "
          "append-only file on).", flush=True)
    stop = stop_on_signals()
    sim = None
    try:
        sim = CadSimulator(community_id=DEMO_COMMUNITY, api_key=DEMO_KEY).start()
        port = settings.port if port_free("0.0.0.0", settings.port) else free_port()
        settings = settings.with_(api_url=sim.url, community_id=DEMO_COMMUNITY,
                                  api_key=Secret(DEMO_KEY), max_rate=DEMO_RATE, port=port,
                                  web_host="127.0.0.1", circuit_cooldown_s=2.0,
                                  circuit_max_cooldown_s=4.0)
        supervisor = Supervisor(settings, STATE_DIR / "logs", PROCESSES)
        supervisor.start_all()
        watcher = threading.Thread(target=supervisor.watch, daemon=True)
        watcher.start()
        try:
            return Demo(settings, sim, supervisor, stop, calls).play()
        finally:
            supervisor.stop()
    finally:
        if sim is not None:
            sim.stop()
        embedded.stop()
