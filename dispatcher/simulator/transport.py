"""The HTTP plumbing both ports share: a server that can cut its connections, a quiet handler.

The API port and the control port each run one Server in a daemon thread; stop() and the
refuse fault close a server and cut every open connection, hanging ones included.
"""

import contextlib
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from dispatcher.simulator.answers import Outcome

if TYPE_CHECKING:
    from dispatcher.simulator.server import CadSimulator

# How often hanging handlers look for a cleared fault or shutdown.
POLL_S = 0.05
# How often the accept loops look for shutdown; it bounds how long stop() and refuse take.
SERVE_POLL_S = 0.02
# Larger than any real call batch; stops a runaway client from exhausting memory.
MAX_BODY = 16 * 1024 * 1024


class BadRequest(Exception):
    """The HTTP framing itself was unusable."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Server(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so stop() can cut them."""

    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 drops SYNs under a burst of concurrent clients.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], sim: "CadSimulator"
    ) -> None:
        self.sim = sim
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's getfqdn(), which can stall on a slow resolver."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection, then serve it in its own thread."""
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        self.forget(request)
        super().shutdown_request(request)

    def forget(self, conn: socket.socket) -> None:
        """Stop tracking a connection that its handler is about to close."""
        with self._conns_lock:
            self._conns.discard(conn)

    def close_connections(self) -> None:
        """Cut every open connection so idle keep-alives and hangs end at once."""
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._conns.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that went away; still report real bugs."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


def spawn(server: Server, name: str) -> tuple[Server, threading.Thread]:
    """Run a server's loop in a daemon thread."""
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": SERVE_POLL_S},
        name=f"cad-simulator-{name}",
        daemon=True,
    )
    thread.start()
    return server, thread


def shut(server: Server, thread: threading.Thread) -> None:
    """Stop a server's loop, close its socket and cut its connections."""
    server.shutdown()
    server.server_close()
    server.close_connections()
    thread.join(timeout=1.0)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler that never logs per request."""

    protocol_version = "HTTP/1.1"
    server_version = "SonoranCADSimulator/1.0"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK
    # would add about 40 ms to every keep-alive answer.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        """Name the simulator in the Server header without the Python version."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: tests and the demo want a quiet simulator."""

    def _read_body(self) -> bytes:
        """Read the request body, honouring Content-Length or chunked encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise BadRequest(400, "BAD REQUEST") from None
        if length < 0:
            raise BadRequest(400, "BAD REQUEST")
        if length > MAX_BODY:
            raise BadRequest(413, "PAYLOAD TOO LARGE")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        """Read a chunked body and its trailers."""
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
            except ValueError:
                raise BadRequest(400, "BAD REQUEST") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise BadRequest(413, "PAYLOAD TOO LARGE")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _send(self, outcome: Outcome) -> int | None:
        """Write an answer; return its status, or None when the client was gone."""
        try:
            self.send_response(outcome.status)
            if outcome.content_type:
                self.send_header("Content-Type", outcome.content_type)
            for name, value in outcome.headers.items():
                self.send_header(name, value)
            # Always framed by length, so keep-alive clients know where the answer ends.
            self.send_header("Content-Length", str(len(outcome.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(outcome.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return None
        return outcome.status
