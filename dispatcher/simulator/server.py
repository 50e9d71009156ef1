"""The fake CAD itself: CadSimulator, its state and lifecycle, and serve() for the CLI.

A request on the API port is recorded and given its fault and rate-limit decision on
arrival, under the lock, so arrival order decides; then it waits out the latency and is
answered by its fault, by the rate limit or by the v1/v2 API of its route.

The simulator has its own clock, the real one plus an offset that ``advance()`` moves
forward: expiry, the rate-limit windows and every timestamp it records or answers run on
it; latency, slow and hang faults run on real time.
"""

import copy
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from dispatcher.simulator.answers import Outcome, answer_too_many
from dispatcher.simulator.api import ApiHandler, Request, answer_v1, answer_v2
from dispatcher.simulator.control import ControlHandler
from dispatcher.simulator.faults import Fault, check_fault, fault_answer, lose_answer
from dispatcher.simulator.others import answer_other
from dispatcher.simulator.ratelimit import EndpointLimits, RateLimit
from dispatcher.simulator.readback import (
    Cad,
    Readback,
    answer_v1_read,
    answer_v1_remove,
    answer_v2_read,
    answer_v2_remove,
    emergency_item,
)
from dispatcher.simulator.records import Records, request_entry
from dispatcher.simulator.transport import POLL_S, Server, shut, spawn


@dataclass
class _Plan:
    """What was decided on arrival, under the lock, so arrival order decides."""

    entry: dict[str, Any]
    fault: Fault | None
    epoch: int
    limited: tuple[str, int] | None  # (Retry-After value, seconds until the window frees)
    tenant: tuple[str, str] | None  # the added community it names (id, key); None: main


class CadSimulator:
    """A fake Sonoran CAD API with switchable faults and a record of what it received."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        community_id: str = "demo-community",
        api_key: str = "demo-key",
        server_ids: tuple[str, ...] = ("1",),
        control_port: int = 0,
        latency_ms: float = 0.0,
    ) -> None:
        self._host = host
        self._port = port
        self._control_port = control_port
        self._community_id = community_id
        self._api_key = api_key
        self._server_ids = tuple(str(s) for s in server_ids)
        self._initial_latency_s = latency_ms / 1000.0
        self._latency_s = self._initial_latency_s
        self._lock = threading.Lock()  # guards records, faults, limits and credentials
        self._admin = threading.RLock()  # serialises start/stop and listener rebinding
        self._stopping = threading.Event()
        self._fault: Fault | None = None
        # Bumped when a fault is set or cleared explicitly; a hang ends when it changes.
        self._fault_epoch = 0
        self._rate_limit: RateLimit | None = None
        self._endpoint_limits = EndpointLimits()
        self._readback = Readback()
        self._offset_s = 0.0  # how far advance() moved the simulator's clock
        self._records = Records()
        # Other communities this CAD host serves: id -> key, and key -> id (add_community).
        self._tenants: dict[str, str] = {}
        self._tenant_of_key: dict[str, str] = {}
        self._api: tuple[Server, threading.Thread] | None = None
        self._control: tuple[Server, threading.Thread] | None = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> "CadSimulator":
        """Start serving in background daemon threads."""
        with self._admin:
            if self._started:
                return self
            self._stopping.clear()
            self._open_api()
            try:
                self._control = spawn(
                    Server((self._host, self._control_port), ControlHandler, self), "control"
                )
            except OSError:
                self._close_api()
                raise
            self._control_port = self._control[0].server_port
            self._started = True
            self._sync_listener()
        return self

    def stop(self) -> None:
        """Stop both servers and cut every connection, hanging ones included."""
        with self._admin:
            if not self._started:
                return
            self._stopping.set()
            with self._lock:
                self._fault_epoch += 1
            # Both accept loops wind down at once rather than one poll interval after another.
            servers = [s for s in (self._api, self._control) if s is not None]
            for server, _ in servers:
                threading.Thread(target=server.shutdown, daemon=True).start()
            for server, thread in servers:
                shut(server, thread)
            self._api = self._control = None
            self._started = False

    def __enter__(self) -> "CadSimulator":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the fake CAD API."""
        return f"http://{self._url_host()}:{self._port}"

    @property
    def control_url(self) -> str:
        """Base URL of the control server."""
        return f"http://{self._url_host()}:{self._control_port}"

    @property
    def port(self) -> int:
        """Port of the API server (the bound one once started)."""
        return self._port

    @property
    def control_port(self) -> int:
        """Port of the control server (the bound one once started)."""
        return self._control_port

    # -- configuration -----------------------------------------------------------------

    def set_fault(
        self, kind: str, count: int | None = None, route: str | None = None, **params: Any
    ) -> None:
        """Misbehave on the next count API requests (None: until cleared), replacing any fault.

        With a route ("create", "read", "remove", "other") only that route's requests
        see the fault and use up its count.
        """
        check_fault(kind, count, params, route)
        with self._admin:
            with self._lock:
                self._fault = Fault(kind, count, dict(params), route)
                self._fault_epoch += 1
            self._sync_listener()

    def clear_faults(self) -> None:
        """Behave normally again; re-bind the API port if it was refusing."""
        with self._admin:
            with self._lock:
                self._fault = None
                self._fault_epoch += 1
            self._sync_listener()

    def set_credentials(self, community_id: str | None = None, api_key: str | None = None) -> None:
        """Change the community id and/or API key the fake CAD accepts."""
        for name, value in (("community_id", community_id), ("api_key", api_key)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string")
        with self._lock:
            if community_id is not None:
                self._community_id = community_id
            if api_key is not None:
                self._api_key = api_key

    def add_community(self, community_id: str, api_key: str) -> None:
        """Serve another community too, as the real CAD serves many: its own id and key,
        its own calls (a community never lists or removes another's), and the rate
        limits per key as for every key. The main community stays as it is."""
        for name, value in (("community_id", community_id), ("api_key", api_key)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"{name} must be a non-empty string")
        with self._lock:
            if api_key in self._tenant_of_key and self._tenant_of_key[api_key] != community_id:
                raise ValueError("that API key belongs to another community")
            old = self._tenants.get(community_id)
            if old is not None:
                self._tenant_of_key.pop(old, None)
            self._tenants[community_id] = api_key
            self._tenant_of_key[api_key] = community_id

    def set_latency(self, ms: float) -> None:
        """Delay every API answer by ms milliseconds."""
        if ms < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            self._latency_s = ms / 1000.0

    def set_rate_limit(
        self, max_requests: int | None, window_s: float = 1.0, retry_after: int | None = None
    ) -> None:
        """Answer 429 once max_requests arrived within window_s seconds; None disables."""
        if max_requests is not None and (max_requests < 0 or window_s <= 0):
            raise ValueError("max_requests must be >= 0 and window_s > 0")
        with self._lock:
            self._rate_limit = (
                None if max_requests is None else RateLimit(max_requests, window_s, retry_after)
            )

    def set_endpoint_limit(self, route: str, per_minute: int | None) -> None:
        """Limit a v2 route ("create", "read", "remove") per key per minute; None: no limit."""
        with self._lock:
            self._endpoint_limits.set(route, per_minute)

    def set_readback(
        self,
        enabled: bool | None = None,
        v1_metadata: bool | None = None,
        v2_casing: str | None = None,
    ) -> None:
        """Switch reading back on or off (the Plus plan), and its undocumented shapes."""
        with self._lock:
            self._readback = self._readback.switched(enabled, v1_metadata, v2_casing)

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward, for expiry and the rate-limit windows."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise ValueError("seconds must be a number >= 0")
        with self._lock:
            self._offset_s += float(seconds)

    def convert(self, cad_id: int) -> int:
        """Play a dispatcher turning a listed 911 call into a dispatch call; return its id."""
        with self._lock:
            return self._records.convert(_call_id(cad_id), self._now())

    def dismiss(self, cad_id: int) -> None:
        """Play a dispatcher clearing a listed 911 call from the list."""
        with self._lock:
            if not self._records.end(_call_id(cad_id), "dismissed", self._now()):
                raise ValueError(f"call {cad_id} is not in the emergency list")

    def reset(self) -> None:
        """Forget records, faults, limits, switches, clock and latency changes; keep credentials."""
        with self._admin:
            with self._lock:
                self._records.clear()
                self._fault = None
                self._fault_epoch += 1
                self._rate_limit = None
                self._endpoint_limits = EndpointLimits()
                self._readback = Readback()
                self._offset_s = 0.0
                self._latency_s = self._initial_latency_s
            self._sync_listener()

    # -- records -----------------------------------------------------------------------

    def received(self) -> list[dict[str, Any]]:
        """Return a copy of every request that reached a handler, in arrival order."""
        with self._lock:
            return copy.deepcopy(self._records.received)

    def calls(self) -> list[dict[str, Any]]:
        """Return a copy of every call the fake CAD created, in order."""
        with self._lock:
            return copy.deepcopy(self._records.calls)

    def stats(self) -> dict[str, Any]:
        """Summarise the records: counts, answers by status, duplicates and the lists.

        ``duplicates`` counts created calls identical to an earlier one; ``duplicate_tags``
        those whose metaData.dispatcherCallId an earlier created call already had.
        """
        with self._lock:
            return self._records.stats(self._now())

    def active(self, server_id: str | None = None) -> list[dict[str, Any]]:
        """Return the emergency list (of one server) as v2 lists it: callId, fields, metaData."""
        with self._lock:
            server = None if server_id is None else str(server_id)
            listed = self._records.listed(server, self._now())
            return copy.deepcopy([emergency_item(r, 2) for r in listed])

    # -- internals: listeners ----------------------------------------------------------

    def _url_host(self) -> str:
        """Return a host a client can connect to, even when bound to every interface."""
        if self._host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self._host == "::":
            return "[::1]"
        return f"[{self._host}]" if ":" in self._host else self._host

    def _open_api(self) -> None:
        """Bind the API port; a re-bind retries briefly while the old socket lets go."""
        attempts = 1 if self._port == 0 else 40
        for attempt in range(attempts):
            try:
                server = Server((self._host, self._port), ApiHandler, self)
                break
            except OSError:
                if attempt == attempts - 1:
                    raise
                time.sleep(POLL_S)
        self._port = server.server_port
        self._api = spawn(server, "api")

    def _close_api(self) -> None:
        """Close the API port so clients get connection refused."""
        if self._api is not None:
            shut(*self._api)
            self._api = None

    def _sync_listener(self) -> None:
        """Make the API port listen exactly when no refuse fault is active."""
        if not self._started:
            return
        with self._lock:
            refusing = self._fault is not None and self._fault.kind == "refuse"
        if refusing:
            self._close_api()
        elif self._api is None:
            self._open_api()

    # -- internals: handling (called by the API handler threads) -----------------------

    def _arrive(self, req: Request) -> _Plan:
        """Record a request and take its fault and rate-limit decision in arrival order."""
        with self._lock:
            api_key, now = self._api_key, self._now()
        entry = request_entry(req, api_key, now)
        with self._lock:
            tenant = self._tenant(req)
            if tenant is not None:
                entry["community"] = tenant[0]
            self._records.add(entry)
            fault = self._take_fault(req.route)
            entry["fault"] = fault.kind if fault else None
            limited = None
            if fault is None or fault.wraps(req.route):
                limited = self._admit(req)
            return _Plan(entry, fault, self._fault_epoch, limited, tenant)

    def _take_fault(self, route: str) -> Fault | None:
        """Consume one use of the active fault if it covers the route (caller holds the lock)."""
        fault = self._fault
        if fault is None or fault.kind == "refuse" or not fault.covers(route):
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        return Fault(fault.kind, None, dict(fault.params), fault.route)

    def _admit(self, req: Request) -> tuple[str, int] | None:
        """Admit a request to the global window, then its v2 endpoint's (caller holds the lock)."""
        now = req.arrived + self._offset_s
        if self._rate_limit is not None:
            limited = self._rate_limit.admit(req, now)
            if limited is not None:
                return limited
        return self._endpoint_limits.admit(req, now)

    def _respond(self, req: Request, plan: _Plan) -> Outcome:
        """Decide the answer: latency first, then the fault, the rate limit, the API."""
        with self._lock:
            latency_s = self._latency_s
        self._pause(latency_s)
        fault = plan.fault
        if fault is not None and not fault.wraps(req.route):
            return fault_answer(req, fault)
        if fault is not None and fault.kind == "slow":
            self._pause(float(fault.params.get("ms", 0.0)) / 1000.0)
        if plan.limited is not None:
            outcome = answer_too_many(req.version, *plan.limited)
        else:
            outcome = self._handle(req, plan.tenant)
        return lose_answer(outcome, fault)

    def _tenant(self, req: Request) -> tuple[str, str] | None:
        """The added community a request names (v1: its ``id``; v2: its key), or None for
        the main one (caller holds the lock)."""
        if not self._tenants:
            return None
        if req.version == 2:
            found = self._tenant_of_key.get(req.bearer or "")
            return None if found is None else (found, self._tenants[found])
        named = req.body.get("id") if isinstance(req.body, dict) else None
        if isinstance(named, str) and named in self._tenants:
            return named, self._tenants[named]
        return None

    def _handle(self, req: Request, tenant: tuple[str, str] | None) -> Outcome:
        """Answer a request by its route and API version, in the community it names
        (``tenant``, found on arrival)."""
        with self._lock:
            if tenant is None:
                cad = Cad(self._community_id, self._api_key, self._server_ids)
            else:
                cad = Cad(tenant[0], tenant[1], self._server_ids)
            readback = self._readback
        community = None if tenant is None else tenant[0]

        def create(calls: list[dict[str, Any]], version: int) -> list[tuple[int, float]]:
            return self._create(calls, version, community)

        def listing(server_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            return self._listing(server_id, community)

        def remove(server_id: str, cad_id: int) -> bool:
            return self._remove(server_id, cad_id, community)

        if req.route == "create" and req.version == 1:
            return answer_v1(req, cad.community_id, cad.api_key, create)
        if req.route == "create":
            return answer_v2(req, cad.api_key, cad.server_ids, create)
        if req.route == "read" and req.version == 1:
            return answer_v1_read(req, cad, readback, listing)
        if req.route == "read":
            return answer_v2_read(req, cad, readback, listing)
        if req.route == "remove" and req.version == 1:
            return answer_v1_remove(req, cad, remove)
        if req.route == "remove":
            return answer_v2_remove(req, cad, remove)
        return answer_other(req, cad.community_id, cad.api_key, cad.server_ids)

    def _create(self, calls: list[dict[str, Any]], version: int,
                community: str | None) -> list[tuple[int, float]]:
        """Create calls in the fake CAD; return their ids and creation times."""
        with self._lock:
            return self._records.create(calls, version, self._now(), community)

    def _listing(self, server_id: str, community: str | None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return copies of a server's listed 911 call records and its dispatch calls."""
        with self._lock:
            now = self._now()
            listed = copy.deepcopy(self._records.listed(server_id, now, community))
            return listed, self._records.dispatch_listed(server_id, community)

    def _remove(self, server_id: str, cad_id: int, community: str | None) -> bool:
        """Remove a call from a server's emergency list through the API."""
        with self._lock:
            return self._records.end(cad_id, "removed", self._now(), server_id, community)

    def _now(self) -> float:
        """The simulator's clock: Unix time plus what advance() added (caller holds the lock)."""
        return time.time() + self._offset_s

    def _settle(self, entry: dict[str, Any], status: int | None) -> None:
        """Record the status actually sent (None when nothing was)."""
        with self._lock:
            entry["status"] = status

    def _pause(self, seconds: float) -> None:
        """Sleep in the handler thread, cut short by stop()."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _hang_over(self, epoch: int) -> bool:
        """Tell a hanging handler whether the fault was cleared or the simulator stopped."""
        with self._lock:
            return self._stopping.is_set() or self._fault_epoch != epoch


def _call_id(cad_id: Any) -> int:
    """Check a CAD call id given to convert or dismiss."""
    if isinstance(cad_id, bool) or not isinstance(cad_id, int):
        raise ValueError("cad_id must be an integer")
    return cad_id


def serve(
    host: str, port: int, community_id: str, api_key: str, control_port: int | None = None
) -> None:
    """Run a simulator in the foreground until SIGINT or SIGTERM."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    # Signal handlers can only be installed from the main thread.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    sim = CadSimulator(
        host, port, community_id=community_id, api_key=api_key, control_port=control_port or 0
    )
    try:
        sim.start()
        print(
            f"Sonoran CAD simulator: API {sim.url} (community {community_id}), "
            f"control {sim.control_url}; Ctrl+C to stop",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
