"""The control port: a JSON API that reads the records and switches faults while it runs.

It is a second HTTP server on its own port, so it keeps working while the API port
refuses. GET /received, /calls and /stats read; POST /fault, /clear, /reset, /latency,
/rate-limit and /credentials change the simulator.
"""

import json
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from dispatcher.simulator.answers import answer_json
from dispatcher.simulator.transport import BadRequest, QuietHandler, Server

if TYPE_CHECKING:
    from dispatcher.simulator.server import CadSimulator


class ControlHandler(QuietHandler):
    """JSON control API on the control port."""

    def do_GET(self) -> None:
        """Serve the read-only endpoints."""
        sim = cast(Server, self.server).sim
        readers = {"/received": sim.received, "/calls": sim.calls, "/stats": sim.stats}
        reader = readers.get(urlsplit(self.path).path)
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
            sim.set_fault(kind, count=count, **params)
            return {"fault": kind}
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
        else:
            raise LookupError(path)
        return {}
