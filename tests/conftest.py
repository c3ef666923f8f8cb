"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from reconciler.simulator import Simulator


@pytest.fixture
def simulator() -> Iterator[Callable[..., Simulator]]:
    """Return a factory that starts a simulator on 127.0.0.1 for the test.

    Call it with a scenario mapping and optional ``Simulator`` keyword
    arguments such as ``clock``. Every simulator it started stops at teardown.
    """
    # Imported here so that tests which do not use the simulator never load it.
    from reconciler.simulator import Simulator

    started: list[Simulator] = []

    def start(scenario: dict[str, Any], **options: Any) -> Simulator:
        instance = Simulator(scenario, **options)
        instance.start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()
