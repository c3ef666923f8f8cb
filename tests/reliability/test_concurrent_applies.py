"""Two `tc apply` processes on one state directory at the same moment."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing

import pytest
from reliability_support import Workspace, scenario, terminal

StartWorkspace = Callable[..., Workspace]

JOBS = 50
ROUNDS = 3


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_parallel_applies_trigger_once(
    workspace: StartWorkspace, round_number: int
) -> None:
    batches = {f"batch_{i:03d}": terminal() for i in range(JOBS)}
    ws = workspace(scenario(batches))
    names = [f"job-{i:03d}" for i in range(JOBS)]
    for i, name in enumerate(names):
        ws.write_job(name, [f"batch_{i:03d}"])

    processes = [ws.start_apply(), ws.start_apply()]
    outputs = [process.communicate(timeout=120) for process in processes]

    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode in (0, 1), f"{stdout}\n{stderr}"
        assert "Traceback" not in stderr, stderr
    per_job = ws.keboola_jobs_per_job()
    assert set(per_job) == set(names)
    assert all(count == 1 for count in per_job.values()), per_job
    assert ws.count("keboola", "POST", "^/jobs$") == JOBS

    ws.apply_until(lambda: _all_followed(ws), timeout=30)

    assert ws.keboola_jobs_per_job() == per_job
    with closing(sqlite3.connect(ws.database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    files = ws.status_files()
    assert set(files) == set(names)
    assert all(document["status"] == "completed" for document in files.values())


def _all_followed(ws: Workspace) -> bool:
    triggers = ws.triggers()
    return len(triggers) == JOBS and all(
        t["keboola_finished"] for t in triggers.values()
    )
