"""End-to-end tests of `tc apply` processes that run at once on one state directory."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from harness import Workspace, running, scenario, terminal

Start = Callable[[dict[str, Any]], Workspace]

PROCESSES = 3
ROUNDS = 3

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="aligning the processes reads their open files from /proc",
)


def test_parallel_applies_trigger_once(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": running(), "batch_b": running()},
            # A slow response keeps one process's send open while the other claims.
            faults=[
                {
                    "service": "keboola",
                    "method": "POST",
                    "path": "^/jobs$",
                    "latency": 0.3,
                }
            ],
        )
    )
    names = ["race-1", "race-2", "race-3"]
    for name in names:
        ws.write_job(name, ["batch_a", "batch_b"])
    ws.apply()
    ws.sim.put_batches(
        {"batch_a": terminal("completed"), "batch_b": terminal("failed")}
    )

    processes = ws.start_aligned(2, "apply")
    outputs = [process.communicate(timeout=60) for process in processes]

    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
    for name in names:
        assert len(ws.sim.keboola_jobs_of(name)) == 1, name
    assert ws.sim.count_requests("POST", "/jobs") == len(names)
    for name in names:
        assert ws.read_status(name)["status"] == "completed_with_failures", name


def test_parallel_applies_create_jobs(workspace: Start) -> None:
    ws = workspace(scenario({}))
    # Many jobs make the sync phase long enough for the processes to overlap,
    # and suspended jobs send no request.
    names = [f"new-{index:02d}" for index in range(40)]
    for index, name in enumerate(names):
        ws.write_job(name, [f"batch_{index:02d}"], suspend=True)
    (ws.root / "empty").mkdir()

    # Start-up jitter can still keep them apart, so each round starts
    # from a new state database and every round must succeed.
    for round_number in range(ROUNDS):
        ws.state_dir = ws.root / f"state-{round_number}"
        ws.env["TC_STATE_DIR"] = str(ws.state_dir)
        # An apply of an empty directory creates the database to align on.
        assert ws.tc("apply", "empty").returncode == 0

        processes = ws.start_aligned(PROCESSES, "apply")
        outputs = [process.communicate(timeout=60) for process in processes]

        for process, (stdout, stderr) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, f"round {round_number}: {stdout}{stderr}"
        assert sorted(ws.jobs_by_name()) == names
    assert ws.sim.requests() == []
