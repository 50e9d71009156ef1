"""The control port: a JSON API that reads the records and switches faults while it runs.

It is a second HTTP server on its own port, so it keeps working while the API port
refuses. GET /received, /calls, /stats and /active (``?server_id=``) read; POST /fault,
/clear, /reset, /latency, /rate-limit, /credentials, /communities, /readback,
/endpoint-limit and /advance change the simulator; POST /convert and /dismiss play a
dispatcher at the CAD. Each takes the JSON keys of the CadSimulator method of the same
name, but /communities: ``{"communities": [{"id": ..., "key": ...}, ...]}`` adds them.
"""

import json
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

from dispatcher.simulator.answers import answer_json
from dispatcher.simulator.transport import BadRequest, QuietHandler, Server

if TYPE_CHECKING:
    from dispatcher.simulator.server import CadSimulator


class ControlHandler(QuietHandler):
    """JSON control API on the control port."""

    def do_GET(self) -> None:
        """Serve the read-only endpoints."""
        sim = cast(Server, self.server).sim
        url = urlsplit(self.path)
        if url.path == "/active":
            server_id = parse_qs(url.query).get("server_id", [None])[-1]
            self._send(answer_json(200, sim.active(server_id)))
            return
        readers = {"/received": sim.received, "/calls": sim.calls, "/stats": sim.stats}
        reader = readers.get(url.path)
        if reader is None:
            self._send(answer_json(404, {"error": "not found"}))
            return
        self._send(answer_json(200, reader()))

    def do_POST(self) -> None:
        """Serve the endpoints that change the simulator."""
        sim = cast(Server, self.server).sim
        try:
            raw = self._read_body()
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            result = self._apply(sim, urlsplit(self.path).path, body)
        except BadRequest as exc:
            self.close_connection = True
            self._send(answer_json(exc.status, {"error": exc.text}))
            return
        except LookupError:
            self._send(answer_json(404, {"error": "not found"}))
            return
        except (ValueError, TypeError) as exc:
            self._send(answer_json(400, {"error": str(exc)}))
            return
        except OSError as exc:
            self._send(answer_json(500, {"error": f"could not rebind the API port: {exc}"}))
            return
        self._send(answer_json(200, {"ok": True, **result}))

    @staticmethod
    def _apply(sim: "CadSimulator", path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Perform one control action; raise LookupError for an unknown path."""
        if path == "/fault":
            params = dict(body)
            kind = params.pop("kind", None)
            if not isinstance(kind, str):
                raise ValueError("'kind' is required")
            count = params.pop("count", None)
            route = params.pop("route", None)
            sim.set_fault(kind, count=count, route=route, **params)
            return {"fault": kind}
        if path == "/convert":
            return {"dispatch_id": sim.convert(_required(body, "cad_id"))}
        if path == "/clear":
            sim.clear_faults()
        elif path == "/reset":
            sim.reset()
        elif path == "/latency":
            sim.set_latency(float(body.get("ms", 0.0)))
        elif path == "/rate-limit":
            sim.set_rate_limit(
                body.get("max_requests"),
                float(body.get("window_s", 1.0)),
                body.get("retry_after"),
            )
        elif path == "/credentials":
            sim.set_credentials(body.get("community_id"), body.get("api_key"))
        elif path == "/communities":
            added = _required(body, "communities")
            if not isinstance(added, list) or not all(isinstance(c, dict) for c in added):
                raise ValueError("'communities' must be a list of {id, key}")
            for c in added:
                sim.add_community(_required(c, "id"), _required(c, "key"))
            return {"added": len(added)}
        elif path == "/readback":
            sim.set_readback(body.get("enabled"), body.get("v1_metadata"), body.get("v2_casing"))
        elif path == "/endpoint-limit":
            sim.set_endpoint_limit(_required(body, "route"), body.get("per_minute"))
        elif path == "/advance":
            sim.advance(_required(body, "seconds"))
        elif path == "/dismiss":
            sim.dismiss(_required(body, "cad_id"))
        else:
            raise LookupError(path)
        return {}


def _required(body: dict[str, Any], name: str) -> Any:
    """Return a required key of a control request's body."""
    if name not in body:
        raise ValueError(f"'{name}' is required")
    return body[name]
