"""The HTTP server on 127.0.0.1 and the ``Simulator`` that starts and stops it."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from reconciler.simulator.application import Application
from reconciler.simulator.batch_specs import parse_batch_specs
from reconciler.simulator.faults import parse_fault_rules
from reconciler.simulator.http_messages import Request, Response, json_response
from reconciler.simulator.scenario import parse_scenario

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"

# Seconds between checks for a stop request in the serving thread, which bound
# how long stop() takes.
SHUTDOWN_POLL_SECONDS = 0.05

# Seconds an idle keep-alive connection stays open before the server closes it.
IDLE_CONNECTION_TIMEOUT = 30


class _Server(ThreadingHTTPServer):
    """Threading HTTP server that tracks its application and open connections."""

    daemon_threads = True
    # socketserver's default backlog is 5. A client that opens more connections
    # at once has the extra SYNs dropped and retried after 1 s, which looks
    # like a slow server to a client with a short timeout.
    request_queue_size = 128

    def __init__(self, port: int, application: Application) -> None:
        self.application = application
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((HOST, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up on a slow response (a latency fault) closes the
        # connection first, so writing the response fails. That is expected.
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            logger.debug("client %s closed the connection early", client_address)
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Shut down every open connection, so clients see the server stop."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            # The peer may have closed the connection already.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into ``Request`` objects for the application."""

    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_TIMEOUT
    # Headers and body go out in separate writes. With Nagle's algorithm on, the
    # body would wait for the client's delayed ACK, about 40 ms on Linux.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        try:
            body = self._read_body()
        except ValueError as error:
            self._send(json_response(400, {"error": f"invalid request body: {error}"}))
            return
        request = Request(
            method=self.command,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
        )
        try:
            response = self.server.application.handle(request)
        except Exception:
            logger.exception("simulator failed on %s %s", self.command, split.path)
            response = json_response(
                500, {"error": "The simulator failed; see its log for the traceback."}
            )
        self._send(response)

    def _read_body(self) -> bytes:
        """Read a body sent with Content-Length or chunked transfer coding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline().split(b";", 1)[0].strip()
                size = int(size_line, 16)
                if size == 0:
                    # Skip trailer fields up to the blank line that ends them.
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError(f"negative Content-Length {length}")
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response) -> None:
        if response.drop:
            # Close the connection without a response.
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)


class Simulator:
    """Simulated OpenAI Batch API and Keboola queue on one 127.0.0.1 port.

    Use it as a context manager, or call ``start`` and ``stop``. ``clock``
    returns the current Unix time; tests can pass their own to control batch
    and job progress. The methods below ``stop`` do what the control API does.
    """

    def __init__(
        self,
        scenario: Mapping[str, Any],
        *,
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.application = Application(parse_scenario(dict(scenario)), clock)
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the base URL, such as ``http://127.0.0.1:8123``."""
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        # Built from the bound socket, so it shows the address actually in use.
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        """Return the port the server listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def start(self) -> str:
        """Bind the port, serve requests in a thread and return the base URL."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._server = _Server(self._port, self.application)
        self.application.stopping.clear()
        self.application.queue.base_url = self.url
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name=f"simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("simulator started on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Stop serving, close the port and all connections. Safe to call twice."""
        server = self._server
        if server is None:
            return
        url = self.url
        self.application.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None
        logger.info("simulator on %s stopped", url)

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def requests(self) -> list[dict[str, Any]]:
        """Return the request log, as ``GET /_sim/requests`` does."""
        return self.application.request_log.entries()

    def add_faults(self, rules: object) -> None:
        """Append one fault rule or a list of them, as ``POST /_sim/faults``."""
        self.application.faults.add(parse_fault_rules(rules, "faults"))

    def clear_faults(self) -> None:
        """Remove all fault rules, as ``DELETE /_sim/faults`` does."""
        self.application.faults.clear()

    def put_batches(self, batches: Mapping[str, Any]) -> None:
        """Add or replace batches, as ``POST /_sim/batches`` does."""
        specs = parse_batch_specs(dict(batches), "batches")
        self.application.batches.put(specs)

    def keboola_jobs(self) -> list[dict[str, Any]]:
        """Return every created job, as ``GET /_sim/keboola/jobs`` does."""
        return self.application.queue.records()

    def reset(self) -> None:
        """Clear the request log and the fault rules, as ``POST /_sim/reset``."""
        self.application.request_log.clear()
        self.application.faults.clear()
