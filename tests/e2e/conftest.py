"""Fixtures of the end-to-end tests. The helpers they use are in ``harness.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import SimulatorProcess, Workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Workspace]]:
    """Return a factory: give it a scenario, get a workspace with its simulator.

    Every simulator the factory started stops at teardown.
    """
    simulators: list[SimulatorProcess] = []

    def start(scenario_data: dict[str, Any]) -> Workspace:
        index = len(simulators)
        simulator = SimulatorProcess(tmp_path / f"simulator-{index}", scenario_data)
        simulators.append(simulator)
        return Workspace(tmp_path / f"work-{index}", simulator)

    yield start
    for simulator in simulators:
        simulator.stop()
