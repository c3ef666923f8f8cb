"""Fixtures of the reliability tests. The helpers are in reliability_support."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from reliability_support import Workspace

from reconciler.simulator import Simulator

StartWorkspace = Callable[..., Workspace]


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[StartWorkspace]:
    """Return a factory: give it a scenario and settings, get a workspace.

    Each workspace has its own simulator; every simulator stops at teardown.
    """
    simulators: list[Simulator] = []

    def start(
        scenario_data: dict[str, Any], settings: Mapping[str, str] | None = None
    ) -> Workspace:
        simulator = Simulator(scenario_data)
        simulator.start()
        simulators.append(simulator)
        root = tmp_path / f"workspace-{len(simulators)}"
        return Workspace(root, simulator, settings)

    yield start
    for simulator in simulators:
        simulator.stop()
