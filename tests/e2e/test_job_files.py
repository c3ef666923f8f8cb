"""End-to-end tests of job files: invalid, edited, removed and missing files."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from harness import Workspace, running, scenario, terminal, variable_values

Start = Callable[[dict[str, Any]], Workspace]

# A job file whose configuration id YAML reads as a number, on line 10.
UNQUOTED_ID_LINE = 10


def unquoted_id_text(ws: Workspace) -> str:
    """Return a job file whose only problem is the unquoted configuration id."""
    return (
        "description: configuration id without quotes\n"
        "batch_ids:\n"
        "  - batch_a\n"
        "openai:\n"
        "  api_key: env:E2E_OPENAI_KEY\n"
        f"  base_url: {ws.sim.url}/v1\n"
        "keboola:\n"
        f"  stack_url: {ws.sim.url}\n"
        "  component_id: kds-team.app-custom-python\n"
        "  configuration_id: 12345\n"
        f"  queue_url: {ws.sim.url}\n"
        "  token: env:E2E_KEBOOLA_TOKEN\n"
    )


def test_invalid_file_spares_valid_jobs(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("first", ["batch_a"])
    ws.write_job("second", ["batch_a"])
    ws.write_text("broken", unquoted_id_text(ws))

    result = ws.apply()

    assert result.returncode == 1
    assert f"jobs.d/broken.yaml:{UNQUOTED_ID_LINE}:" in result.stderr
    assert len(ws.sim.keboola_jobs_of("first")) == 1
    assert len(ws.sim.keboola_jobs_of("second")) == 1
    assert ws.sim.keboola_jobs_of("broken") == []
    assert ws.read_status("first")["status"] == "completed"
    assert ws.read_status("second")["status"] == "completed"
    broken = ws.read_status("broken")
    assert broken["status"] == "invalid"
    assert f"broken.yaml:{UNQUOTED_ID_LINE}:" in broken["error"]["message"]
    assert "configuration_id" in broken["error"]["message"]
    assert ws.jobs_by_name()["broken"]["status"] == "invalid"


def test_invalid_edit_keeps_last_spec(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed"), "batch_b": running()}))
    ws.write_job("keeper", ["batch_a", "batch_b"])
    ws.apply()
    ws.write_text("keeper", unquoted_id_text(ws))
    ws.sim.put_batches({"batch_b": terminal("completed")})

    result = ws.apply()

    assert result.returncode == 1
    status = ws.read_status("keeper")
    assert status["status"] == "invalid"
    assert status["error"] is not None
    # The last valid spec still polls batch_b, which the broken file omits.
    assert [batch["id"] for batch in status["batches"]] == ["batch_a", "batch_b"]
    assert status["batches"][1]["status"] == "completed"


def test_added_batch_delays_trigger(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {
                "batch_a": terminal("completed"),
                "batch_b": running(),
                "batch_c": running(),
            }
        )
    )
    ws.write_job("grow", ["batch_a", "batch_b"])
    ws.apply()
    ws.write_job("grow", ["batch_a", "batch_b", "batch_c"])
    ws.sim.put_batches({"batch_b": terminal("completed")})

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    status = ws.read_status("grow")
    assert [batch["id"] for batch in status["batches"]] == [
        "batch_a",
        "batch_b",
        "batch_c",
    ]
    assert status["batches"][2]["status"] == "in_progress"
    assert status["summary"]["pending"] == 1
    assert status["status"] == "active"
    assert ws.sim.keboola_jobs() == []

    ws.sim.put_batches({"batch_c": terminal("completed")})
    ws.apply()

    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    values = variable_values(records[0])
    assert values["batch_ids_completed"] == '["batch_a", "batch_b", "batch_c"]'


def test_removed_batch_stops_counting(workspace: Start) -> None:
    ws = workspace(
        scenario({"batch_a": terminal("completed"), "batch_stuck": running()})
    )
    ws.write_job("shrink", ["batch_a", "batch_stuck"])
    ws.apply()
    assert ws.sim.keboola_jobs() == []
    ws.write_job("shrink", ["batch_a"])

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    values = variable_values(records[0])
    assert values["batch_ids_completed"] == '["batch_a"]'
    assert values["batch_count_total"] == "1"
    assert "batch_stuck" not in values["teckochecker_batches"]
    status = ws.read_status("shrink")
    assert [batch["id"] for batch in status["batches"]] == ["batch_a"]
    assert status["status"] == "completed"


def test_changed_batch_set_triggers_again(workspace: Start) -> None:
    ws = workspace(
        scenario({"batch_a": terminal("completed"), "batch_d": terminal("failed")})
    )
    ws.write_job("regrow", ["batch_a"])
    ws.apply()
    first_trigger = ws.read_status("regrow")["trigger"]["id"]
    ws.write_job("regrow", ["batch_a", "batch_d"])

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    records = ws.sim.keboola_jobs()
    assert len(records) == 2
    values = variable_values(records[1])
    assert values["batch_ids_completed"] == '["batch_a"]'
    assert values["batch_ids_failed"] == '["batch_d"]'
    assert values["batch_count_total"] == "2"
    status = ws.read_status("regrow")
    assert status["trigger"]["id"] != first_trigger
    assert status["trigger"]["id"] == values["teckochecker_trigger_id"]
    assert status["status"] == "completed_with_failures"


def test_changed_interval_keeps_trigger(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("steady", ["batch_a"])
    ws.apply()
    first_trigger = ws.read_status("steady")["trigger"]["id"]
    ws.write_job("steady", ["batch_a"], poll_interval_seconds=600)

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    assert "poll_interval_seconds" in result.stdout
    assert len(ws.sim.keboola_jobs()) == 1
    status = ws.read_status("steady")
    assert status["trigger"]["id"] == first_trigger
    assert status["status"] == "completed"


def test_raised_batch_limit_allows_more(workspace: Start) -> None:
    batch_ids = [f"batch_{index:02d}" for index in range(12)]
    ws = workspace(
        scenario({batch_id: terminal("completed") for batch_id in batch_ids})
    )
    ws.env["TC_MAX_BATCH_IDS"] = "12"
    ws.write_job("wide", batch_ids)

    assert ws.tc("validate", "jobs.d").returncode == 0
    result = ws.apply()

    assert result.returncode == 0, result.stderr
    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    assert variable_values(records[0])["batch_count_total"] == "12"
    assert ws.read_status("wide")["status"] == "completed"


def test_removed_file_prunes_job(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("stays", ["batch_a"])
    ws.write_job("goes", ["batch_a"])
    ws.apply()
    assert ws.status_path("goes").exists()
    ws.job_path("goes").unlink()

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    assert not ws.status_path("goes").exists()
    assert ws.status_path("stays").exists()
    assert sorted(ws.jobs_by_name()) == ["stays"]
    named = ws.tc("status", "goes")
    assert named.returncode == 1
    assert "goes" in named.stderr


def test_empty_directory_needs_allow_empty(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("lonely", ["batch_a"])
    ws.apply()
    status_bytes = ws.status_path("lonely").read_bytes()
    ws.job_path("lonely").unlink()

    held_back = ws.apply()

    assert held_back.returncode == 1
    assert "--allow-empty" in held_back.stderr
    assert ws.status_path("lonely").read_bytes() == status_bytes
    jobs = ws.jobs_by_name()
    assert sorted(jobs) == ["lonely"]
    assert jobs["lonely"]["status"] == "completed"

    pruned = ws.apply("--allow-empty")

    assert pruned.returncode == 0, pruned.stderr
    assert not ws.status_path("lonely").exists()
    assert ws.status_json() == []


def test_diff_exit_code_shows_changes(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("planned", ["batch_a"])

    before = ws.tc("diff")

    assert before.returncode == 1
    assert "planned" in before.stdout

    ws.apply()
    after = ws.tc("diff")

    assert after.returncode == 0, after.stdout + after.stderr

    ws.write_job("planned", ["batch_a"], poll_interval_seconds=300)
    edited = ws.tc("diff")

    assert edited.returncode == 1
    assert "poll_interval_seconds" in edited.stdout


def test_dry_run_writes_nothing(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("rehearsal", ["batch_a"])

    result = ws.apply("--dry-run")

    assert result.returncode == 0, result.stderr
    assert "rehearsal" in result.stdout
    assert not (ws.state_dir / "state.db").exists()
    assert not ws.status_path("rehearsal").exists()
    assert ws.sim.requests() == []


def test_dry_run_keeps_state(workspace: Start) -> None:
    ws = workspace(
        scenario({"batch_a": terminal("completed"), "batch_b": terminal("completed")})
    )
    ws.write_job("rehearsal", ["batch_a"])
    ws.apply()
    status_bytes = ws.status_path("rehearsal").read_bytes()
    jobs_before = ws.status_json()
    ws.sim.reset()
    ws.write_job("rehearsal", ["batch_a", "batch_b"])

    result = ws.apply("--dry-run")

    assert result.returncode == 0, result.stderr
    assert "+batch_b" in result.stdout
    assert ws.status_path("rehearsal").read_bytes() == status_bytes
    assert ws.status_json() == jobs_before
    assert ws.sim.requests() == []


def test_validate_reports_file_and_line(workspace: Start) -> None:
    ws = workspace(scenario({}))
    ws.write_job("fine", ["batch_a"])
    ws.write_text("broken", unquoted_id_text(ws))

    result = ws.tc("validate", "jobs.d")

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert f"jobs.d/broken.yaml:{UNQUOTED_ID_LINE}:" in output
    assert "jobs.d/fine.yaml" in output
    assert ws.tc("validate", "jobs.d/fine.yaml").returncode == 0
    assert not ws.state_dir.exists()


def test_schema_lists_job_fields(workspace: Start) -> None:
    ws = workspace(scenario({}))

    result = ws.tc("schema")

    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "batch_ids" in schema["properties"]
    assert "openai" in schema["properties"]
    assert "keboola" in schema["properties"]


def test_reverted_batch_set_not_triggered_again(workspace: Start) -> None:
    ws = workspace(
        scenario({"batch_a": terminal("completed"), "batch_typo": running()})
    )
    ws.write_job("catalogue", ["batch_a"])
    ws.apply()
    ws.write_job("catalogue", ["batch_a", "batch_typo"])
    ws.apply()
    ws.write_job("catalogue", ["batch_a"])

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    assert len(ws.sim.keboola_jobs_of("catalogue")) == 1
    status = ws.read_status("catalogue")
    assert status["status"] == "completed"
    assert status["trigger"]["state"] == "accepted"


def test_rerun_triggers_same_set_again(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("catalogue", ["batch_a"])
    ws.apply()

    rerun = ws.tc("rerun", "catalogue")
    result = ws.apply()

    assert rerun.returncode == 0, rerun.stderr
    assert result.returncode == 0, result.stderr
    assert len(ws.sim.keboola_jobs_of("catalogue")) == 2
