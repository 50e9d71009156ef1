"""A fake Sonoran CAD API over real HTTP, with faults that can be switched while it runs.

It serves, over v1 and v2, creating a 911 call (v1 ``POST /emergency/call_911``, the seed;
v2 ``POST /v2/emergency/servers/{serverId}/calls/911``), reading the calls back (v1
``POST /emergency/get_calls``; v2 ``GET /v2/emergency/servers/{serverId}/calls``) and
removing one (v1 ``POST /emergency/remove_911``; v2
``DELETE /v2/emergency/servers/{serverId}/calls/911/{callId}``), and a few other
endpoints (the plan, unit locations: ``others``). It records every request it
received (with the API key redacted) and every call it "created", keeps each server's
emergency list (calls leave it when removed, when ``deleteAfterMinutes`` passes, or when a
dispatcher converts or dismisses them), and can misbehave on demand: refuse connections,
reset them, hang, answer slowly, answer 5xx/429/HTML/empty, reject permanently, or create
the call and then lose the answer (drop the connection or hang). A second HTTP server on
its own port controls all of this, so it keeps working while the API port refuses.

Behaviours that are our assumption, because the public record (CAD-API.md) is silent:
- v1 with several calls in ``data`` answers ``EMERGENCY CALL ADDED ID: 10001,10002``.
- v1 compares ``id`` and ``key`` as exact strings and does not validate call fields
  beyond each being a JSON object; get_calls and remove_911 check type, id and key the
  same way, with the same 400 texts.
- v1 429 and 5xx bodies are HTML pages from a proxy; v2 429 is the documented JSON.
- The v2 success body echoes the call plus ``callId``, ``serverId`` (the path segment,
  a string) and ``createdAt``; v2 validation errors name the offending field.
- The global rate limit is off by default; when on it counts every request on the API
  port, v1 and v2, per presented API key. The v2 per-endpoint limits per key per minute
  are the real ones for get calls (5) and delete (10), on by default; v2 create has none
  by default (the real 10/min is left to the global limit, so tests are not throttled).
- Faults without a route, and the global rate limit, apply to every request on the API
  port, whatever its path, as a failing proxy in front of the CAD would; a fault with a
  route applies to that route only. The commit faults create only on the create route;
  elsewhere they reset or hang.
- CAD ids start at 10001 and are never reused, not even after ``reset()``; dispatch calls
  share the sequence. A call without ``serverId`` is on server "1"; ids compare as strings.
- ``deleteAfterMinutes`` counts from creation on the simulator's clock, which ``advance()``
  moves forward; 0 (or anything that is not a positive number) means never.
- One main community (``community_id``/``api_key``), and any number of others added with
  ``add_community`` (control ``/communities``), as one CAD host serves many communities:
  each has its own calls (listing, removal and dispatch calls never cross), the rate
  limits count per key as always, and a request's record names its added community in
  ``community``. Faults, latency and the plan switches are the host's, shared by all.
- Reading back: the Plus plan, v1 ``metaData`` and the v2 list casing are switches; see
  ``readback`` for those and the rest of what it assumes (remove_911's text, type filters).

Records never hold the API key: the v1 ``key`` field, the Authorization header and any
occurrence of a configured or presented key are replaced by ``***`` before storing.

The package, one concept a module (only the names below are its public API):
- ``server``: CadSimulator (state, lifecycle, configuration, clock, the arrival decision), serve().
- ``api``: the API port's handler, the parsed Request and its route, the create answers.
- ``readback``: the read and remove answers of v1 and v2, and how calls are listed.
- ``others``: the endpoints beyond 911 calls (the plan, unit locations), else 404.
- ``faults``: the fault kinds, their validation and routes, and the answer each fault gives.
- ``ratelimit``: the sliding window per presented API key, and the v2 endpoint limits.
- ``records``: what was received and created, each call's life, the redaction of keys.
- ``control``: the JSON control server on its own port.
- ``answers``: the Outcome of a request and the text, JSON, problem and proxy bodies.
- ``transport``: the HTTP server and handler plumbing both ports share.
"""

from dispatcher.simulator.api import V1_PATH
from dispatcher.simulator.faults import FAULT_KINDS
from dispatcher.simulator.records import FIRST_CALL_ID
from dispatcher.simulator.server import CadSimulator, serve

__all__ = ["FAULT_KINDS", "FIRST_CALL_ID", "V1_PATH", "CadSimulator", "serve"]
