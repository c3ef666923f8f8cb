"""End-to-end tests of `tc status`: the detail view and machine-readable output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from harness import STATUS_FILE_KEYS, Workspace, running, scenario, terminal

Start = Callable[[dict[str, Any]], Workspace]


def test_detail_lists_batches_and_events(workspace: Start) -> None:
    ws = workspace(
        scenario({"batch_done": terminal("completed"), "batch_busy": running()})
    )
    ws.write_job("detail", ["batch_done", "batch_busy"])
    ws.apply()

    result = ws.tc("status", "detail")

    assert result.returncode == 0, result.stderr
    assert "batch_done" in result.stdout
    assert "batch_busy" in result.stdout
    assert "in_progress" in result.stdout
    assert "recent events" in result.stdout
    assert "job created" in result.stdout
    assert "batch_done: unknown -> completed" in result.stdout


def test_yaml_output_has_status_keys(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed"), "batch_b": running()}))
    ws.write_job("one", ["batch_a"])
    ws.write_job("two", ["batch_a", "batch_b"])
    ws.apply()

    result = ws.tc("status", "-o", "yaml")

    assert result.returncode == 0, result.stderr
    jobs = yaml.safe_load(result.stdout)
    assert isinstance(jobs, list)
    assert [job["job"] for job in jobs] == ["one", "two"]
    for job in jobs:
        assert isinstance(job, dict)
        missing = [key for key in STATUS_FILE_KEYS if key not in job]
        assert missing == [], job["job"]
    for job in jobs:
        status_file = ws.read_status(job["job"])
        for key in STATUS_FILE_KEYS:
            assert job[key] == status_file[key], f"{job['job']}: {key}"


def test_unknown_job_name_fails(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("known", ["batch_a"])
    ws.apply()

    result = ws.tc("status", "unknown")

    assert result.returncode == 1
    assert "unknown" in result.stderr
    assert "known" in result.stderr
