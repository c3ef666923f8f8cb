"""End-to-end tests of `tc apply`: polling, the trigger and what Keboola receives."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

from harness import (
    COMPONENT,
    CONFIGURATION_ID,
    TECKOCHECKER_VARIABLES,
    Workspace,
    configuration,
    running,
    scenario,
    terminal,
    variable_values,
)

Start = Callable[[dict[str, Any]], Workspace]


def test_completed_batches_trigger_once(workspace: Start) -> None:
    ws = workspace(
        scenario({"batch_a": terminal("completed"), "batch_b": terminal("completed")})
    )
    ws.write_job("catalogue", ["batch_a", "batch_b"])

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    record = records[0]
    assert record["body"]["mode"] == "run"
    assert record["body"]["component"] == COMPONENT
    assert record["body"]["config"] == CONFIGURATION_ID
    assert "configData" not in record["body"]
    assert "configData" not in record["raw_body"]
    values = variable_values(record)
    assert values["batch_ids_completed"] == '["batch_a", "batch_b"]'
    assert values["batch_ids_failed"] == "[]"
    assert values["batch_count_total"] == "2"
    assert values["batch_count_completed"] == "2"
    assert values["batch_count_failed"] == "0"
    assert values["teckochecker_job"] == "catalogue"
    # The configuration defines the five variables, so all five resolve.
    assert sorted(record["rendered_variables"]) == sorted(TECKOCHECKER_VARIABLES)
    status = ws.read_status("catalogue")
    assert status["status"] == "completed"
    assert status["trigger"]["state"] == "accepted"
    assert status["trigger"]["keboola_job_id"] == record["id"]
    assert status["trigger"]["id"] == values["teckochecker_trigger_id"]
    assert status["error"] is None
    assert ws.jobs_by_name()["catalogue"]["status"] == "completed"


def test_batch_details_reach_keboola(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {
                "batch_a": {
                    **terminal("completed"),
                    "request_counts": {"total": 5, "completed": 4, "failed": 1},
                },
                "batch_b": terminal("failed"),
            }
        )
    )
    ws.write_job("details", ["batch_a", "batch_b"])

    ws.apply()

    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    details = json.loads(variable_values(records[0])["teckochecker_batches"])
    assert [batch["id"] for batch in details] == ["batch_a", "batch_b"]
    assert details[0]["status"] == "completed"
    assert details[0]["output_file_id"] == "file-out-a"
    assert details[0]["error_file_id"] == "file-err-a"
    assert details[0]["request_counts"] == {"total": 5, "completed": 4, "failed": 1}
    assert details[1]["status"] == "failed"
    assert details[1]["output_file_id"] is None


def test_failed_batches_in_file_order(workspace: Start) -> None:
    # Neither sorted nor grouped by status, so only job-file order matches.
    ws = workspace(
        scenario(
            {
                "batch_zulu": terminal("expired"),
                "batch_ok": terminal("completed"),
                "batch_alpha": terminal("failed"),
                "batch_mike": terminal("cancelled"),
            }
        )
    )
    ws.write_job("mixed", ["batch_zulu", "batch_ok", "batch_alpha", "batch_mike"])

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    values = variable_values(records[0])
    assert values["batch_ids_failed"] == '["batch_zulu", "batch_alpha", "batch_mike"]'
    assert values["batch_ids_completed"] == '["batch_ok"]'
    assert values["batch_count_total"] == "4"
    assert values["batch_count_completed"] == "1"
    assert values["batch_count_failed"] == "3"
    status = ws.read_status("mixed")
    assert status["status"] == "completed_with_failures"
    assert status["summary"] == {"total": 4, "completed": 1, "failed": 3, "pending": 0}
    assert [batch["status"] for batch in status["batches"]] == [
        "expired",
        "completed",
        "failed",
        "cancelled",
    ]


def test_pending_batch_holds_trigger(workspace: Start) -> None:
    ws = workspace(
        scenario({"batch_done": terminal("completed"), "batch_busy": running()})
    )
    ws.write_job("partial", ["batch_done", "batch_busy"])

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    assert ws.sim.keboola_jobs() == []
    assert ws.sim.count_requests("POST", "/jobs") == 0
    status = ws.read_status("partial")
    assert status["status"] == "active"
    assert status["summary"]["pending"] == 1
    assert status["summary"]["completed"] == 1
    assert status["batches"][1]["status"] == "in_progress"
    assert status["trigger"] is None
    listed = ws.jobs_by_name()["partial"]
    assert listed["status"] == "active"
    assert listed["summary"]["pending"] > 0


def test_shared_batch_polled_once_per_apply(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {
                "batch_shared": running(),
                "batch_left": terminal("completed"),
                "batch_right": terminal("completed"),
            }
        )
    )
    ws.write_job("left", ["batch_shared", "batch_left"])
    ws.write_job("right", ["batch_shared", "batch_right"])

    first = ws.apply()

    assert first.returncode == 0, first.stderr
    assert ws.sim.count_requests("GET", "/v1/batches/batch_shared") == 1
    assert ws.read_status("left")["batches"][0]["status"] == "in_progress"
    assert ws.read_status("right")["batches"][0]["status"] == "in_progress"

    second = ws.apply()

    assert second.returncode == 0, second.stderr
    assert ws.sim.count_requests("GET", "/v1/batches/batch_shared") == 2


def test_keboola_job_followed_to_success(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}, job_seconds=0.5))
    ws.write_job("follow", ["batch_a"])

    ws.apply()

    # The POST response shows the new job before it runs.
    first = ws.read_status("follow")["trigger"]
    assert first["state"] == "accepted"
    assert first["keboola_status"] != "success"

    ws.apply_until(
        lambda: ws.read_status("follow")["trigger"]["keboola_status"] == "success"
    )

    trigger = ws.read_status("follow")["trigger"]
    assert trigger["keboola_message"] == "Component processing finished."
    assert ws.jobs_by_name()["follow"]["trigger"]["keboola_status"] == "success"


def test_finished_apply_changes_nothing(workspace: Start) -> None:
    ws = workspace(
        scenario({"batch_a": terminal("completed"), "batch_b": terminal("failed")})
    )
    ws.write_job("done-ok", ["batch_a"])
    ws.write_job("done-failures", ["batch_a", "batch_b"])
    ws.apply()
    jobs = ws.jobs_by_name()
    assert jobs["done-ok"]["trigger"]["keboola_status"] == "success"
    assert jobs["done-failures"]["trigger"]["keboola_status"] == "success"
    paths = [ws.status_path("done-ok"), ws.status_path("done-failures")]
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in paths}
    ws.sim.reset()

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    changing = [
        entry for entry in ws.sim.requests() if entry["method"] not in ("GET", "HEAD")
    ]
    assert changing == []
    for path in paths:
        assert path.read_bytes() == before[path][0], path.name
        assert path.stat().st_mtime_ns == before[path][1], path.name
    assert len(ws.sim.keboola_jobs()) == 2
    assert "0 status files written" in result.stdout


def test_keboola_error_keeps_completed(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": terminal("completed")},
            configurations=[configuration(fail_with="Output table is locked.")],
        )
    )
    ws.write_job("broken-run", ["batch_a"])

    result = ws.apply()

    assert result.returncode == 1
    assert len(ws.sim.keboola_jobs()) == 1
    status = ws.read_status("broken-run")
    # The batches did complete, so the job is completed and its error names
    # the failed run.
    assert status["status"] == "completed"
    assert status["trigger"]["keboola_status"] == "error"
    assert status["trigger"]["keboola_message"] == "Output table is locked."
    assert "Output table is locked." in status["error"]["message"]
    listed = ws.jobs_by_name()["broken-run"]
    assert listed["trigger"]["keboola_status"] == "error"


def test_suspended_job_sends_nothing(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("sleeper", ["batch_a"], suspend=True)

    paused = ws.apply()

    assert paused.returncode == 0, paused.stderr
    assert ws.sim.requests() == []
    status = ws.read_status("sleeper")
    assert status["status"] == "paused"
    assert status["trigger"] is None

    ws.write_job("sleeper", ["batch_a"], suspend=False)
    resumed = ws.apply()

    assert resumed.returncode == 0, resumed.stderr
    assert len(ws.sim.keboola_jobs()) == 1
    assert ws.read_status("sleeper")["status"] == "completed"


def test_other_working_directory_same_status_file(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": running()}))
    ws.write_job("catalogue", ["batch_a"])
    assert ws.apply().returncode == 0
    elsewhere = ws.root / "elsewhere"
    (elsewhere / "jobs.d").mkdir(parents=True)

    ws.sim.put_batches({"batch_a": terminal("completed")})
    result = subprocess.run(
        ws.command("apply", str(ws.job_dir)),
        cwd=elsewhere,
        env=ws.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert ws.read_status("catalogue")["status"] == "completed"
    assert list((elsewhere / "jobs.d").iterdir()) == []
