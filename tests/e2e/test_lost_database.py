"""A lost state database: the status files in git keep triggers from repeating."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from harness import Workspace, scenario, terminal

Start = Callable[[dict[str, Any]], Workspace]


def test_unknown_trigger_searched_not_resent(workspace: Start) -> None:
    lost_answer = {
        "service": "keboola",
        "method": "POST",
        "path": "^/jobs$",
        "after_commit": {"drop": True},
        "times": 1,
    }
    ws = workspace(scenario({"batch_a": terminal("completed")}, faults=[lost_answer]))
    ws.write_job("catalogue", ["batch_a"])
    ws.apply()
    assert ws.read_status("catalogue")["trigger"]["state"] == "unknown"
    shutil.rmtree(ws.state_dir)

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    trigger = ws.read_status("catalogue")["trigger"]
    assert trigger["state"] == "accepted"
    assert len(ws.sim.keboola_jobs_of("catalogue")) == 1
    assert ws.sim.count_requests("POST", "/jobs") == 1


def test_changed_batch_set_still_triggers(workspace: Start) -> None:
    ws = workspace(
        scenario({"batch_a": terminal("completed"), "batch_b": terminal("failed")})
    )
    ws.write_job("catalogue", ["batch_a"])
    ws.apply()
    shutil.rmtree(ws.state_dir)
    ws.write_job("catalogue", ["batch_a", "batch_b"])

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    assert len(ws.sim.keboola_jobs_of("catalogue")) == 2
    assert ws.read_status("catalogue")["status"] == "completed_with_failures"
