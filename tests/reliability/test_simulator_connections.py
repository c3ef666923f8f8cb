"""The simulator under many connections at once and clients that give up."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from reliability_support import scenario, terminal

from reconciler.simulator import Simulator

StartSimulator = Callable[..., Simulator]

CONNECTIONS = 40


def test_connection_burst_served_at_once(simulator: StartSimulator) -> None:
    """A burst of new connections is served without the 1 s SYN retry.

    With socketserver's default listen backlog of 5, connections beyond it
    had their SYN dropped and retried a second later.
    """
    sim = simulator(scenario({"batch_a": terminal()}))

    def timed_request(_: int) -> float:
        started = time.monotonic()
        with httpx.Client(trust_env=False, timeout=5) as client:
            client.get(f"{sim.url}/_sim/requests").raise_for_status()
        return time.monotonic() - started

    with ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:
        durations = list(pool.map(timed_request, range(CONNECTIONS)))

    assert max(durations) < 0.9, sorted(durations)[-5:]


def test_client_leaving_early_is_quiet(
    simulator: StartSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    sim = simulator(
        scenario(
            {"batch_a": terminal()},
            faults=[{"service": "openai", "latency": 0.3}],
        )
    )

    with (
        httpx.Client(trust_env=False, timeout=0.05) as client,
        pytest.raises(httpx.TimeoutException),
    ):
        client.get(f"{sim.url}/v1/batches/batch_a")
    time.sleep(0.6)

    assert "Traceback" not in capfd.readouterr().err
    assert [entry["path"] for entry in sim.requests()] == ["/v1/batches/batch_a"]
