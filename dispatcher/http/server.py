"""Serving the ``web`` app: waitress, in one process or in several sharing one socket.

One Python process tops out near 1,200 requests/s on this project's door (the GIL;
docs/PERFORMANCE.md). ``WEB_CONCURRENCY`` (the Heroku/gunicorn convention; default 1)
runs that many processes: the parent binds the port once, forks the children, each
child builds its own app (its own Redis connections) and serves the shared socket with
waitress. The parent restarts a child that dies and, on SIGTERM or SIGINT, passes the
signal on and waits for every child. Nothing is shared between the children but the
socket and Redis: the operations page's sessions are signed cookies, and every number
the page and ``/metrics`` show comes from Redis.

Slow clients. Waitress hands a request to a thread only once it has arrived whole, so a
client that sends its headers one line at a time holds a connection, not a thread. The
door therefore takes `CONNECTION_LIMIT` connections (poll(), not select(), which stops
at 1,024 descriptors; the process's open-file limit is raised to its hard limit) and
closes one that sent nothing for `CHANNEL_TIMEOUT_S`.

Waiting requests. A request with ``Prefer: wait=N`` holds its thread for up to 30 s
(`dispatcher.http.waiting`), and at most `MAX_WAITING` of them wait at once per process.
Waitress therefore runs that many threads beyond the ones that serve everything else
(`threads`), so a full house of waiting requests never delays another request. A waiting
thread sleeps on an event (no CPU, no GIL); the extra threads cost memory only (a stack
each, touched only as deep as it is used).

Two pools. The create requests that do not ask to wait (`dispatcher.http.lean`'s
`create_request`: almost all of the door's traffic) are served by a pool of their own,
`threads` threads; everything else by the other pool (`threads` plus `MAX_WAITING`).
With one pool of 272 threads a burst of creates ran on as many threads at once as there
were connections, all fighting for the GIL: CPU per request rose with the load
(docs/PERFORMANCE.md, "Doors, lean path"). A small pool works through a queue instead,
its threads going from one request to the next without sleeping; a create never holds
its thread longer than one bounded Redis round trip, and waiting requests, the
pass-through and the page still have their own threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import socket
import time
from typing import Any

from dispatcher.http.app import create_app
from dispatcher.http.ingest import SERVER_MAX_BODY_BYTES
from dispatcher.http.lean import create_request
from dispatcher.http.waiting import MAX_WAITING
from dispatcher.settings import Settings

# A stable logger name operators filter on (kept from before the move into http/).
log = logging.getLogger("dispatcher.web")

#: Pause before a child that died is started again (a crash loop stays slow).
RESTART_PAUSE_S = 1.0
#: Open connections one web process keeps (waitress' default of 100 let 120 slow
#: clients shut the door); each costs a file descriptor and a few KiB.
CONNECTION_LIMIT = 4096
#: An idle or incomplete connection is closed after this many seconds without a byte.
CHANNEL_TIMEOUT_S = 20
#: How often waitress looks for such connections, seconds.
CLEANUP_INTERVAL_S = 5
#: A request body larger than this is buffered on disk by waitress (its default: 512 KiB).
INBUF_OVERFLOW_BYTES = 64 * 1024
#: Descriptors needed beyond the connections (Redis pools, logs, the listening socket).
SPARE_FDS = 256


def serve(settings: Settings, host: str = "0.0.0.0", threads: int = 16) -> None:
    """Serve the app on settings.port with ``settings.web_processes`` processes, each with
    ``threads`` threads for requests plus `MAX_WAITING` for requests that wait."""
    # Waitress warns on every request once its queue backs up: costly exactly when busy.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    processes = settings.web_processes
    _raise_fd_limit(CONNECTION_LIMIT + SPARE_FDS)
    log.info("web: listening on http://%s:%d (%d process%s)", host, settings.port,
             processes, "" if processes == 1 else "es")
    if processes <= 1:
        _waitress(settings, threads, host=host, port=settings.port)
        return
    sock = _listen(host, settings.port)
    _Prefork(settings, sock, processes, threads).run()


def _waitress(settings: Settings, threads: int, **where: Any) -> None:
    from waitress import serve as waitress_serve

    _no_spin_while_serving()

    waitress_serve(create_app(settings), threads=threads + MAX_WAITING, ident="dispatcher",
                   _dispatcher=_Pools(threads, threads + MAX_WAITING),
                   max_request_body_size=SERVER_MAX_BODY_BYTES, _quiet=True,
                   connection_limit=CONNECTION_LIMIT, channel_timeout=CHANNEL_TIMEOUT_S,
                   cleanup_interval=CLEANUP_INTERVAL_S, asyncore_use_poll=True,
                   # Bodies beyond this wait in a temporary file, not in memory: a client
                   # that trickles a large body holds a file, not RAM.
                   inbuf_overflow=INBUF_OVERFLOW_BYTES,
                   # X-Forwarded-* always reach the app: ProxyFix (dispatcher.http.clientaddr)
                   # believes X-Forwarded-For only from DISPATCHER_TRUSTED_PROXIES hops,
                   # and a forwarded request is never "local" to the page's loopback rule.
                   clear_untrusted_proxy_headers=False, **where)


def _no_spin_while_serving() -> None:
    """Keep waitress's loop from spinning on a connection whose request is being served.

    Waitress asks a connection ``writable()`` whenever its output buffer holds bytes. While
    a worker thread writes the answer it holds the buffer's lock and sends the bytes
    itself; the loop, told "writable", finds the lock taken, sends nothing, and asks
    again at once: under load 20-40 turns of the loop (each asking every connection)
    per request instead of under one (counted with ``wrk -c32``). While a request is
    being served its thread flushes what it writes and wakes the loop when it is done
    (waitress's ``service`` pulls the trigger), so the loop need not look before then;
    it still does when the buffer passes the high watermark (the thread then waits for
    the loop to drain it) or the connection is closing.
    """
    from waitress.channel import HTTPChannel

    if getattr(HTTPChannel.writable, "_dispatcher", False):
        return
    original = HTTPChannel.writable

    def writable(self: Any) -> Any:
        if (self.requests and not self.will_close and not self.close_when_flushed
                and self.total_outbufs_len < self.adj.outbuf_high_watermark):
            return False
        return original(self)

    writable._dispatcher = True  # type: ignore[attr-defined]
    HTTPChannel.writable = writable  # type: ignore[method-assign]


class _Pools:
    """Waitress's task dispatcher, split: create requests on one pool of threads, the
    rest on another (see the module's docstring). Waitress hands it a channel whose
    first pending request is the one to serve."""

    def __init__(self, creates: int, others: int) -> None:
        from waitress.task import ThreadedTaskDispatcher

        self.creates = ThreadedTaskDispatcher()
        self.others = ThreadedTaskDispatcher()
        self.creates.set_thread_count(creates)
        self.others.set_thread_count(others)

    def set_thread_count(self, count: int) -> None:  # waitress's interface; sizes are ours
        pass

    def add_task(self, task: Any) -> None:
        requests = getattr(task, "requests", None)
        first = requests[0] if requests else None
        if first is not None and not first.error and create_request(
                first.command, first.path, first.headers):
            self.creates.add_task(task)
        else:
            self.others.add_task(task)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        done = self.creates.shutdown(cancel_pending, timeout)
        return bool(self.others.shutdown(cancel_pending, timeout) and done)


def _raise_fd_limit(wanted: int) -> None:
    """Lift the soft open-file limit towards ``wanted`` (never past the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("web: only %d open files allowed (ulimit -n); fewer than %d slow clients "
                    "can shut the door: raise the limit", soft, CONNECTION_LIMIT)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class _Prefork:
    """The parent of the web children: start, restart, stop."""

    def __init__(self, settings: Settings, sock: socket.socket, count: int,
                 threads: int) -> None:
        self.settings, self.sock, self.count, self.threads = settings, sock, count, threads
        self.children: set[int] = set()
        self.stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for _ in range(self.count):
            self._spawn()
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            self.children.discard(pid)
            if not self.stopping:
                log.warning("web: process %d ended (%s); starting another", pid,
                            _why(status))
                time.sleep(RESTART_PAUSE_S)
                if not self.stopping:
                    self._spawn()
        self.sock.close()

    def _spawn(self) -> None:
        # SIGTERM is held back across the fork: a child that got it before dropping the
        # parent's handler would run _stop (killing its siblings) and then serve on, so
        # the parent would wait for it forever. Held, it arrives after the reset.
        stops = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            pid = os.fork()
            if pid == 0:  # the child: default signals, its own app and Redis connections
                code = 0
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
                    _waitress(self.settings, self.threads, sockets=[self.sock])
                except BaseException:  # noqa: BLE001 - report, then leave without cleanup
                    log.exception("web: process %d failed", os.getpid())
                    code = 1
                finally:
                    os._exit(code)
            self.children.add(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)

    def _stop(self, signum: int, _: Any) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def _why(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
