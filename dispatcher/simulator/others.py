"""Endpoints beyond 911 calls, so clients with one base URL for the CAD have more to call.

The route "other" of the API port: the plan (v1 ``POST /general/get_version``, v2
``GET /v2/general/version``) and unit locations (v1 ``POST /emergency/unit_location``,
v2 ``PATCH /v2/emergency/servers/{serverId}/unit-locations``); anything else answers 404
``NOT FOUND`` as before. Credentials are checked as on the other routes.

Behaviours that are our assumption, because the public record is silent or thin:
- The plan is PLUS (3): v1 answers the digit as text, v2 ``{"version": 3}``.
- v1 unit_location answers ``UNIT LOCATION UPDATED``; v2 answers
  ``{"updated": <number of entries>}``, the entries being ``data`` (v1) or ``updates`` (v2).
"""

import hmac
import re
from typing import Any
from urllib.parse import urlsplit

from dispatcher.simulator.answers import Outcome, answer_json, answer_problem, answer_text
from dispatcher.simulator.api import Request, v1_data

#: The community's plan: 0 FREE, 1 STARTER, 2 STANDARD, 3 PLUS, 4 PRO.
PLAN = 3
_UNIT_LOCATIONS = re.compile(r"^/v2/emergency/servers/(?P<server>[^/]+)/unit-locations$")


def answer_other(req: Request, community_id: str, api_key: str,
                 server_ids: tuple[str, ...]) -> Outcome:
    """Answer a request of the "other" route."""
    path = urlsplit(req.target).path
    if req.method == "POST" and path == "/general/get_version":
        data = _v1(req, "GET_VERSION", community_id, api_key, allow_empty=True)
        return data if isinstance(data, Outcome) else answer_text(200, str(PLAN))
    if req.method == "POST" and path == "/emergency/unit_location":
        data = _v1(req, "UNIT_LOCATION", community_id, api_key)
        return data if isinstance(data, Outcome) else answer_text(200, "UNIT LOCATION UPDATED")
    if req.method == "GET" and path == "/v2/general/version":
        return _v2_refusal(req, api_key, path) or answer_json(200, {"version": PLAN})
    found = _UNIT_LOCATIONS.match(path)
    if req.method == "PATCH" and found:
        refused = _v2_refusal(req, api_key, path)
        if refused is not None:
            return refused
        if found.group("server") not in server_ids:
            return answer_problem(404, f"Server {found.group('server')} is not configured", path)
        updates = req.body.get("updates") if isinstance(req.body, dict) else None
        if not isinstance(updates, list):
            return answer_problem(400, "The field 'updates' must be an array", path)
        return answer_json(200, {"updated": len(updates)})
    return answer_text(404, "NOT FOUND")


def _v1(req: Request, kind: str, community_id: str, api_key: str,
        allow_empty: bool = False) -> list[dict[str, Any]] | Outcome:
    body = req.body
    if allow_empty and isinstance(body, dict) and body.get("data") == []:
        body = {**body, "data": [{}]}  # get_version's documented data is empty
    return v1_data(body, kind, community_id, api_key)


def _v2_refusal(req: Request, api_key: str, path: str) -> Outcome | None:
    bearer = req.bearer
    if not isinstance(bearer, str) or not hmac.compare_digest(bearer.encode(), api_key.encode()):
        return answer_problem(401, "Invalid or missing API key", path)
    return None
