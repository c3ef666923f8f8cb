"""The benchmark script runs end to end at tiny sizes; no timing is asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCENARIO_ROWS = (
    "| poll cycle |",
    "| shared batches |",
    "| trigger burst |",
    "| apply, nothing to do |",
    "| quiet cycle |",
    "| status |",
    "| start-up |",
    "| list mode, 20 newest |",
    "| list mode, behind 50 newer |",
    "| idle daemon |",
    "| memory |",
)


@pytest.mark.slow
def test_benchmark_runs_at_tiny_scale() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TC_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--scale", "0.001"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for row in SCENARIO_ROWS:
        assert row in done.stdout, row
    assert "| quiet cycle | status files written | 0 files |" in done.stdout
    assert "| shared batches | requests, 2 jobs | 10 req |" in done.stdout
