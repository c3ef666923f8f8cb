"""`tc status` output read back: the table and the JSON, one job per line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.store import Store

runner = CliRunner()


def make_state(state_dir: Path, total: int) -> None:
    store = Store.open(state_dir)
    for name in ("alpha", "beta"):
        store.insert_job(
            name, path=f"jobs.d/{name}.yaml", revision="r1", status="active"
        )
        store.set_batch_ids(name, [f"batch_{name}"])
    store.update_batch(
        "alpha",
        "batch_alpha",
        status="in_progress",
        request_counts={"total": total, "completed": 1, "failed": 0},
    )
    store.close()


def test_json_has_one_job_per_line(tmp_path: Path) -> None:
    make_state(tmp_path, 10)

    result = runner.invoke(app, ["status", "-o", "json", "--state-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "["
    assert lines[-1] == "]"
    assert [json.loads(line.rstrip(","))["job"] for line in lines[1:-1]] == [
        "alpha",
        "beta",
    ]
    jobs = json.loads(result.output)
    assert jobs[0]["batches"][0]["request_counts"]["total"] == 10
    assert jobs[0]["path"] == "jobs.d/alpha.yaml"


def test_json_keeps_integer_beyond_64_bits(tmp_path: Path) -> None:
    huge = 2**70 + 1
    make_state(tmp_path, huge)

    result = runner.invoke(app, ["status", "-o", "json", "--state-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    jobs = json.loads(result.output)
    assert jobs[0]["batches"][0]["request_counts"]["total"] == huge


def test_json_without_jobs_is_empty_array(tmp_path: Path) -> None:
    Store.open(tmp_path).close()

    result = runner.invoke(app, ["status", "-o", "json", "--state-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert result.output == "[]\n"


def test_table_lists_each_job(tmp_path: Path) -> None:
    make_state(tmp_path, 10)

    result = runner.invoke(app, ["status", "--state-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert rows[0][:3] == ["JOB", "STATUS", "BATCHES"]
    assert [row[:3] for row in rows[1:]] == [
        ["alpha", "active", "0/1"],
        ["beta", "active", "0/1"],
    ]
