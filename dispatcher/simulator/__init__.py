"""A fake Sonoran CAD API over real HTTP, with faults that can be switched while it runs.

It serves the v1 endpoint ``POST /emergency/call_911`` (the seed) and the v2 endpoint
``POST /v2/emergency/servers/{serverId}/calls/911``, records every request it received
(with the API key redacted) and every call it "created", and can misbehave on demand:
refuse connections, reset them, hang, answer slowly, answer 5xx/429/HTML/empty, reject
permanently, or create the call and then drop the connection. A second HTTP server on
its own port controls all of this, so it keeps working while the API port refuses.

Behaviours that are our assumption, because the public record (CAD-API.md) is silent:
- v1 with several calls in ``data`` answers ``EMERGENCY CALL ADDED ID: 10001,10002``.
- v1 compares ``id`` and ``key`` as exact strings and does not validate call fields
  beyond each being a JSON object.
- v1 429 and 5xx bodies are HTML pages from a proxy; v2 429 is the documented JSON.
- The v2 success body echoes the call plus ``callId``, ``serverId`` (the path segment,
  a string) and ``createdAt``; v2 validation errors name the offending field.
- The rate limit is off by default (the real v2 allows 10 creations a minute per key);
  when on it counts every request on the API port, per presented API key.
- Faults and the rate limit apply to every request on the API port, whatever its path,
  as a failing proxy in front of the CAD would.
- CAD ids start at 10001 and are never reused, not even after ``reset()``.

Records never hold the API key: the v1 ``key`` field, the Authorization header and any
occurrence of a configured or presented key are replaced by ``***`` before storing.

The package, one concept a module (only the names below are its public API):
- ``server``: CadSimulator (state, lifecycle, configuration, the arrival decision), serve().
- ``api``: the API port's handler, the parsed Request, and the v1/v2 answers.
- ``faults``: the fault kinds, their validation, and the answer each fault gives.
- ``ratelimit``: the sliding window per presented API key.
- ``records``: what was received and created, and the redaction of keys.
- ``control``: the JSON control server on its own port.
- ``answers``: the Outcome of a request and the text, JSON, problem and proxy bodies.
- ``transport``: the HTTP server and handler plumbing both ports share.
"""

from dispatcher.simulator.api import V1_PATH
from dispatcher.simulator.faults import FAULT_KINDS
from dispatcher.simulator.records import FIRST_CALL_ID
from dispatcher.simulator.server import CadSimulator, serve

__all__ = ["FAULT_KINDS", "FIRST_CALL_ID", "V1_PATH", "CadSimulator", "serve"]
