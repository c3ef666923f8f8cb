"""Liveness, metrics and the HTTP server behind /healthz and /metrics."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from reconciler.health import (
    HealthServer,
    HttpAddress,
    Liveness,
    Metrics,
    StoreCounts,
    is_loopback,
    parse_http_address,
)
from reconciler.http_pool import HttpPool, observe_requests
from reconciler.settings import Settings


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_sleeping_on_time() -> None:
    """A loop that sleeps its planned delay is healthy until twice the delay."""
    clock = FakeClock()
    liveness = Liveness(stuck_after=10, clock=clock)
    liveness.working("cycle")
    liveness.cycle_finished()
    liveness.sleeping(30)

    clock.now += 59
    healthy, details = liveness.check()
    assert healthy
    assert details["step"] == "sleeping"
    assert details["seconds_since_last_cycle"] == 59

    clock.now += 2
    healthy, details = liveness.check()
    assert not healthy
    assert details["status"] == "stuck"
    assert details["seconds_overdue"] == 1


def test_liveness_floor_for_short_sleeps() -> None:
    """A short planned delay still gets ``stuck_after`` seconds."""
    clock = FakeClock()
    liveness = Liveness(stuck_after=10, clock=clock)
    liveness.sleeping(1)

    clock.now += 9.5
    assert liveness.check()[0]
    clock.now += 1
    assert not liveness.check()[0]


def test_liveness_long_cycle_is_stuck() -> None:
    """A step that runs past ``stuck_after`` is stuck, whatever the plan was."""
    clock = FakeClock()
    liveness = Liveness(stuck_after=10, clock=clock)
    liveness.sleeping(3600)
    clock.now += 5
    liveness.working("cycle")

    clock.now += 10.5
    healthy, details = liveness.check()

    assert not healthy
    assert details["step"] == "cycle"


def test_liveness_idle_without_schedule() -> None:
    """A loop waiting only for events is never stuck."""
    clock = FakeClock()
    liveness = Liveness(stuck_after=10, clock=clock)
    liveness.sleeping(None)

    clock.now += 10**6

    assert liveness.check()[0]


def test_liveness_start_has_a_deadline() -> None:
    """A daemon that never reaches its first sleep turns unhealthy."""
    clock = FakeClock()
    liveness = Liveness(stuck_after=10, clock=clock)

    clock.now += 11

    assert not liveness.check()[0]


def test_metrics_text_has_every_family() -> None:
    """The gauges hold the counts, zero for known statuses without jobs."""
    metrics = Metrics()
    metrics.set_counts(
        StoreCounts(
            jobs={"active": 2, "completed": 1},
            batches={"in_progress": 3, "unknown": 1},
            triggers={"accepted": 1},
        )
    )
    metrics.observe_request("openai", "GET", "200")
    metrics.observe_request("openai", "GET", "200")
    metrics.observe_request("keboola", "POST", "timeout")
    metrics.observe_cycle(0.2, "ok")
    metrics.observe_git("push", "error")

    text = metrics.render().decode()

    assert 'tc_jobs{status="active"} 2.0' in text
    assert 'tc_jobs{status="failed"} 0.0' in text
    assert 'tc_batches{status="in_progress"} 3.0' in text
    assert 'tc_batches{status="unknown"} 1.0' in text
    assert 'tc_triggers{state="accepted"} 1.0' in text
    assert 'tc_http_requests_total{api="openai",method="GET",outcome="200"} 2.0' in text
    assert (
        'tc_http_requests_total{api="keboola",method="POST",outcome="timeout"} 1.0'
        in text
    )
    assert 'tc_cycles_total{outcome="ok"} 1.0' in text
    assert "tc_cycle_duration_seconds_count 1.0" in text
    assert 'tc_git_operations_total{operation="push",outcome="error"} 1.0' in text


def test_metrics_registries_are_separate() -> None:
    """Two Metrics objects never share a series."""
    first, second = Metrics(), Metrics()
    first.observe_cycle(1.0, "ok")

    assert 'tc_cycles_total{outcome="ok"}' not in second.render().decode()


async def test_pool_requests_reach_observer() -> None:
    """Every attempt through HttpPool.send reaches the observers with its outcome."""

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/broken":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(404 if request.url.path == "/missing" else 200)

    seen: list[tuple[str, str, str]] = []
    remove = observe_requests(lambda *item: seen.append(item))
    try:
        async with HttpPool(Settings(), transport=httpx.MockTransport(respond)) as pool:
            await pool.send("GET", httpx.URL("http://127.0.0.1/ok"), headers={})
            await pool.send(
                "POST", httpx.URL("http://127.0.0.1/missing"), headers={}, api="keboola"
            )
            with pytest.raises(httpx.ConnectError):
                await pool.send(
                    "GET",
                    httpx.URL("http://127.0.0.1/broken"),
                    headers={},
                    api="openai",
                )
    finally:
        remove()

    assert seen == [
        ("unknown", "GET", "200"),
        ("keboola", "POST", "404"),
        ("openai", "GET", "transport_error"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("9090", HttpAddress("127.0.0.1", 9090), id="bare-port"),
        pytest.param("127.0.0.1:0", HttpAddress("127.0.0.1", 0), id="any-port"),
        pytest.param("0.0.0.0:8080", HttpAddress("0.0.0.0", 8080), id="all"),
        pytest.param("[::1]:9090", HttpAddress("::1", 9090), id="ipv6"),
        pytest.param("localhost:80", HttpAddress("localhost", 80), id="name"),
    ],
)
def test_http_address_parses(text: str, expected: HttpAddress) -> None:
    """A bare port means loopback; other hosts are taken as written."""
    assert parse_http_address(text) == expected


@pytest.mark.parametrize(
    "text", [":9090", "host:", "host:port", "1.2.3.4:70000", "[::1]"]
)
def test_http_address_rejects(text: str) -> None:
    """A missing host or a bad port is an error that shows the forms."""
    with pytest.raises(ValueError, match="invalid"):
        parse_http_address(text)


def test_loopback_hosts() -> None:
    """Loopback names and addresses are told apart from others."""
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.com")


async def _get(
    address: HttpAddress, path: str, method: str = "GET"
) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_server_health_and_metrics() -> None:
    """The server returns 200 on time, 503 when stuck, and the metrics text."""
    clock = FakeClock()
    liveness = Liveness(stuck_after=10, clock=clock)
    metrics = Metrics()
    metrics.observe_cycle(0.1, "ok")
    server = HealthServer(HttpAddress("127.0.0.1", 0), liveness, metrics)
    address = await server.start()
    try:
        liveness.sleeping(5)
        status, body = await _get(address, "/healthz")
        assert status == 200
        assert json.loads(body)["status"] == "ok"

        clock.now += 11
        status, body = await _get(address, "/healthz")
        assert status == 503
        assert json.loads(body)["status"] == "stuck"

        status, body = await _get(address, "/metrics")
        assert status == 200
        assert b'tc_cycles_total{outcome="ok"} 1.0' in body

        assert (await _get(address, "/healthz", "HEAD")) == (503, b"")
        assert (await _get(address, "/other"))[0] == 404
        assert (await _get(address, "/metrics", "POST"))[0] == 405
    finally:
        await server.close()


async def test_server_drops_bad_request() -> None:
    """A malformed request line closes the connection without a response."""
    server = HealthServer(HttpAddress("127.0.0.1", 0), Liveness(), Metrics())
    address = await server.start()
    try:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
    finally:
        await server.close()


async def test_server_close_ends_open_connections() -> None:
    """A client that never sends its request does not keep the server open."""
    server = HealthServer(HttpAddress("127.0.0.1", 0), Liveness(), Metrics())
    address = await server.start()
    reader, writer = await asyncio.open_connection(address.host, address.port)
    await asyncio.sleep(0.05)

    await server.close()

    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "tc-http-request" not in names
