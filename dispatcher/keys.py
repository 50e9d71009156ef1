"""Redis key names under one prefix; the Lua scripts build the same names (``lua/_calls.lua``).

Layout (prefix ``dispatcher`` by default):

    {p}:call:{id}     hash  the call record: payload, state, attempts, outcome
    {p}:idem:{key}    str   idempotency key -> call id (expires, see IDEMPOTENCY_TTL_S)
    {p}:batch:{id}    str   an enqueue_many batch met the backlog cap (expires in 60 s)
    {p}:pending       zset  every call not yet delivered or dead, by enqueue time
    {p}:held          zset  calls waiting for capacity, by enqueue time (oldest first)
    {p}:queued        zset  calls with a Celery message out, by publish time
    {p}:scheduled     zset  calls waiting to retry, by due time
    {p}:inflight      zset  calls a worker is sending, by lease expiry
    {p}:verifying     zset  calls whose last send has an unknown outcome, by enqueue time,
                      waiting for their server's read-back (dispatcher.readback)
    {p}:verifying:{server}  zset  the same calls of one server ('' : SONORAN_SERVER_ID)
    {p}:readback:{server}   hash  that server's read-back: gen, state, lease, next time
    {p}:readback:servers    set   servers with verifying calls
    {p}:readback      hash  whether the CAD can be read back (unavailable_until, reason)
    {p}:cad:{cad id}  str   the CAD's id of a delivered call -> our id (expires with it)
    {p}:tickets       str   the tickets' counter (dispatcher.tickets; starts at 9e15)
    {p}:ticket:{n}    str   a call's ticket -> our id (expires with the call's record)
    {p}:outcomes      pub/sub channel: ids of calls a door waits on (Prefer: wait), on
                      delivery or death (lua/_notify.lua; dispatcher.http.waiting)
    {p}:replicated    pub/sub channel nobody reads: an empty PUBLISH before each Redis
                      WAIT (DISPATCHER_REDIS_WAIT; dispatcher.replicas)
    {p}:dead          zset  dead letters, by time of death
    {p}:invalid       zset  the dead letters ``invalid`` (inbox entries), by time of death
    {p}:invalid:summary  hash  invalid entries summarised beyond DISPATCHER_MAX_INVALID:
                      oldest_at, newest_at (the count is counters' invalid_summarised)
    {p}:invalid:hashes   list  SHA-256 of the newest summarised invalid entries (capped)
    {p}:circuit       hash  the shared circuit breaker (dispatcher.circuit)
    {p}:rate          hash  the shared rate limiter: next slot, 429 pause (dispatcher.ratelimit)
    {p}:counters      hash  monotonic counters (survive restarts, shared by processes)
    {p}:audit         list  operator actions on dead letters (replay, purge)
    {p}:rate:granted  zset  send times granted by the rate limiter, recent only (ratelimit)
    {p}:latency       hash  CAD request latency histogram (dispatcher.telemetry)
    {p}:heartbeats    hash  worker -> last heartbeat (dispatcher.heartbeat)
    {p}:history       list  one sample per 10 s for the page's chart (dispatcher.history)

A call is in exactly one of held/queued/scheduled/inflight/verifying/dead (or
delivered, in none). Every transition is one Lua script (``dispatcher/lua/``, loaded by
`dispatcher.scripts`), so a crash leaves each call in one place.
Redis Cluster is not supported: the scripts touch several keys at once.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How long an idempotency key maps to its call id (a day, like Stripe's keys).
IDEMPOTENCY_TTL_S = 24 * 3600
#: How long a delivered call's record is kept for `dispatcher status` (a week).
DELIVERED_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "dispatcher"

    def call(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}"

    def idem(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def batch(self, first_id: str) -> str:
        """Marker of an `enqueue_many` batch refused at the backlog cap (expires in 60 s)."""
        return f"{self.prefix}:batch:{first_id}"

    def _name(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    @property
    def held(self) -> str:
        return self._name("held")

    @property
    def queued(self) -> str:
        return self._name("queued")

    @property
    def scheduled(self) -> str:
        return self._name("scheduled")

    @property
    def inflight(self) -> str:
        return self._name("inflight")

    @property
    def pending(self) -> str:
        return self._name("pending")

    @property
    def verifying(self) -> str:
        return self._name("verifying")

    def verifying_of(self, server: str) -> str:
        """Verifying calls of one server ('' : the configured SONORAN_SERVER_ID)."""
        return self._name(f"verifying:{server}")

    def readback_of(self, server: str) -> str:
        return self._name(f"readback:{server}")

    @property
    def readback(self) -> str:
        return self._name("readback")

    @property
    def tickets(self) -> str:
        """The tickets' counter (enqueue.lua allocates from it)."""
        return self._name("tickets")

    def ticket(self, ticket: int) -> str:
        """A call's ticket, mapped to our id."""
        return self._name(f"ticket:{ticket}")

    def cad(self, cad_call_id: str) -> str:
        """The CAD's id of a delivered call, mapped to our id."""
        return self._name(f"cad:{cad_call_id}")

    @property
    def outcomes(self) -> str:
        """Pub/sub channel, not a stored key: outcomes of calls a door waits on."""
        return self._name("outcomes")

    @property
    def replicated(self) -> str:
        """Pub/sub channel, not a stored key: published to before a WAIT (replicas)."""
        return self._name("replicated")

    @property
    def dead(self) -> str:
        return self._name("dead")

    @property
    def invalid(self) -> str:
        return self._name("invalid")

    @property
    def invalid_summary(self) -> str:
        return self._name("invalid:summary")

    @property
    def invalid_hashes(self) -> str:
        return self._name("invalid:hashes")

    @property
    def circuit(self) -> str:
        return self._name("circuit")

    @property
    def rate(self) -> str:
        return self._name("rate")

    @property
    def counters(self) -> str:
        return self._name("counters")

    @property
    def audit(self) -> str:
        return self._name("audit")

    @property
    def latency(self) -> str:
        return self._name("latency")

    @property
    def heartbeats(self) -> str:
        return self._name("heartbeats")

    @property
    def history(self) -> str:
        return self._name("history")
