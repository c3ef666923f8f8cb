"""Health and metrics of the daemon, served over HTTP.

``GET /healthz`` returns 200 while the daemon's loop makes progress and 503
when it is stuck. The loop reports each step to ``Liveness``: the delay it
plans before it sleeps, and the start of each cycle or git operation. The
loop is stuck when it oversleeps its planned wake-up, so that no cycle
finished within max(2 x the planned delay, ``stuck_after``), or when one step
runs longer than ``stuck_after``. A loop that sleeps with nothing scheduled
waits for events and is healthy.

``GET /metrics`` serves Prometheus text from the daemon's own registry, never
the process-wide default one, so tests can build as many as they like.

The server is a minimal HTTP/1.1 responder on asyncio streams: one request
per connection, no keep-alive, no body. Probes and scrapers need no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from reconciler.jobstate import JOB_STATUSES

log = logging.getLogger(__name__)

DEFAULT_STUCK_AFTER = 300.0
"""Seconds one step of the loop may take before ``/healthz`` reports 503."""

REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its request line and headers."""

MAX_HEADER_LINES = 100

BATCH_STATUSES = (
    "unknown",
    "validating",
    "in_progress",
    "finalizing",
    "cancelling",
    "completed",
    "failed",
    "cancelled",
    "expired",
)
TRIGGER_STATES = ("sending", "unknown", "accepted", "rejected")

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class Liveness:
    """Tracks whether the daemon's loop keeps its own schedule.

    Args:
        stuck_after: seconds one step (a cycle, a git operation) may take,
            and the minimum time the loop may oversleep its planned wake-up.
        clock: monotonic seconds; tests pass their own.
    """

    def __init__(
        self,
        *,
        stuck_after: float = DEFAULT_STUCK_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stuck_after = stuck_after
        self._clock = clock
        self._deadline: float | None = clock() + stuck_after
        self._step = "starting"
        self._last_cycle_finished: float | None = None

    def working(self, step: str) -> None:
        """Record that the loop starts ``step``, which must end within the limit."""
        self._step = step
        self._deadline = self._clock() + self.stuck_after

    def cycle_finished(self) -> None:
        """Record the end of a cycle."""
        self._last_cycle_finished = self._clock()

    def sleeping(self, delay: float | None) -> None:
        """Record that the loop sleeps ``delay`` seconds, or until an event if None."""
        self._step = "sleeping"
        if delay is None:
            self._deadline = None
        else:
            self._deadline = self._clock() + max(2 * delay, self.stuck_after)

    def check(self) -> tuple[bool, dict[str, object]]:
        """Return whether the loop is on time, and the details for ``/healthz``."""
        now = self._clock()
        healthy = self._deadline is None or now <= self._deadline
        since = (
            None
            if self._last_cycle_finished is None
            else round(now - self._last_cycle_finished, 3)
        )
        overdue = (
            0.0 if self._deadline is None else round(max(now - self._deadline, 0), 3)
        )
        return healthy, {
            "status": "ok" if healthy else "stuck",
            "step": self._step,
            "seconds_since_last_cycle": since,
            "seconds_overdue": overdue,
        }


@dataclass(frozen=True)
class StoreCounts:
    """Counts read from the state database after a cycle, for the gauges."""

    jobs: Mapping[str, int]
    batches: Mapping[str, int]
    triggers: Mapping[str, int]


class Metrics:
    """The daemon's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge(
            "tc_jobs",
            "Jobs in the state database, by job status.",
            ["status"],
            registry=self.registry,
        )
        self.batches = Gauge(
            "tc_batches",
            "Tracked batches, by OpenAI status; unknown before the first poll.",
            ["status"],
            registry=self.registry,
        )
        self.triggers = Gauge(
            "tc_triggers",
            "Current triggers of jobs, by state.",
            ["state"],
            registry=self.registry,
        )
        self.requests = Counter(
            "tc_http_requests",
            "HTTP attempts to the OpenAI and Keboola APIs, by API, method and "
            "outcome (status code, timeout or transport_error).",
            ["api", "method", "outcome"],
            registry=self.registry,
        )
        self.cycles = Counter(
            "tc_cycles",
            "Cycles run, by outcome: ok, error or cancelled.",
            ["outcome"],
            registry=self.registry,
        )
        self.cycle_duration = Histogram(
            "tc_cycle_duration_seconds",
            "Wall-clock duration of a cycle in seconds.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.last_cycle = Gauge(
            "tc_last_cycle_timestamp_seconds",
            "Unix time at which the last cycle finished.",
            registry=self.registry,
        )
        self.git_operations = Counter(
            "tc_git_operations",
            "git pull, commit and push runs of the daemon, by operation and "
            "outcome (ok or error).",
            ["operation", "outcome"],
            registry=self.registry,
        )

    def observe_request(self, api: str, method: str, outcome: str) -> None:
        """Count one HTTP attempt; fits ``http_pool.observe_requests``."""
        self.requests.labels(api=api, method=method, outcome=outcome).inc()

    def observe_cycle(self, seconds: float, outcome: str) -> None:
        """Count a cycle and record its duration."""
        self.cycles.labels(outcome=outcome).inc()
        self.cycle_duration.observe(seconds)
        self.last_cycle.set(time.time())

    def observe_git(self, operation: str, outcome: str) -> None:
        """Count one git operation."""
        self.git_operations.labels(operation=operation, outcome=outcome).inc()

    def set_counts(self, counts: StoreCounts) -> None:
        """Replace the job, batch and trigger gauges with ``counts``.

        Known statuses are always present, at 0 when nothing has them, so a
        series does not vanish when its last job changes status.
        """
        _fill(self.jobs, JOB_STATUSES, counts.jobs)
        _fill(self.batches, BATCH_STATUSES, counts.batches)
        _fill(self.triggers, TRIGGER_STATES, counts.triggers)

    def render(self) -> bytes:
        """Return the metrics in the Prometheus text format."""
        return generate_latest(self.registry)


def _fill(gauge: Gauge, known: tuple[str, ...], values: Mapping[str, int]) -> None:
    gauge.clear()
    for status in known:
        gauge.labels(status).set(0)
    for status, count in values.items():
        gauge.labels(status).set(count)


@dataclass(frozen=True)
class HttpAddress:
    """The address of the health and metrics server."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_http_address(text: str) -> HttpAddress:
    """Parse ``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``.

    A bare port binds 127.0.0.1. Any other host, 0.0.0.0 included, must be
    written out, so that the server is never exposed by accident.

    Raises:
        ValueError: the text is not one of these forms, or the port is not
            between 0 and 65535 (0 picks a free port).
    """
    text = text.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if not rest.startswith(":"):
            msg = f"invalid address {text!r}; write [IPV6]:PORT"
            raise ValueError(msg)
        port_text = rest[1:]
    else:
        host, _, port_text = text.rpartition(":")
        if not host:
            msg = (
                f"invalid address {text!r}; write HOST:PORT such as 127.0.0.1:9090, "
                "or PORT alone for 127.0.0.1"
            )
            raise ValueError(msg)
    if not port_text.isdigit() or int(port_text) > 65535:
        msg = f"invalid port in {text!r}; use a number from 0 to 65535"
        raise ValueError(msg)
    return HttpAddress(host, int(port_text))


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HealthServer:
    """Serves ``/healthz`` and ``/metrics`` on one address.

    Each connection is handled by a task named ``tc-http-request``; ``close``
    stops listening and cancels the ones still open.
    """

    def __init__(
        self, address: HttpAddress, liveness: Liveness, metrics: Metrics
    ) -> None:
        self.address = address
        self._liveness = liveness
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._requests: set[asyncio.Task[None]] = set()

    async def start(self) -> HttpAddress:
        """Bind and listen; return the address bound, with the real port.

        Raises:
            OSError: the address cannot be bound.
        """
        self._server = await asyncio.start_server(
            self._handle, self.address.host, self.address.port
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        return HttpAddress(str(host), int(port))

    async def close(self) -> None:
        """Stop listening and end the open connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._requests):
            task.cancel()
        if self._requests:
            await asyncio.gather(*self._requests, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.set_name("tc-http-request")
            self._requests.add(task)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                method, path = await _read_request(reader)
            status, content_type, body = self.respond(method, path)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError) as error:
            log.debug("Health server: request dropped: %s", error)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if task is not None:
                self._requests.discard(task)

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Return status, content type and body for a request."""
        path = path.split("?", 1)[0]
        if path not in ("/healthz", "/metrics"):
            return 404, "text/plain; charset=utf-8", b"not found; try /healthz\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"only GET and HEAD\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._metrics.render()
        healthy, details = self._liveness.check()
        body = (json.dumps(details) + "\n").encode("utf-8")
        return (200 if healthy else 503), "application/json", body


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """Read the request line and skip the headers; return method and path.

    Raises:
        ValueError: the request line is malformed or there are too many headers.
    """
    line = (await reader.readline()).decode("latin-1").strip()
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        msg = f"malformed request line {line[:100]!r}"
        raise ValueError(msg)
    for _ in range(MAX_HEADER_LINES):
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            return parts[0], parts[1]
    msg = "too many header lines"
    raise ValueError(msg)
