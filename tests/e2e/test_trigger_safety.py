"""End-to-end tests of the exactly-once trigger: rejection, races, lost answers, secrets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness import (
    KEBOOLA_TOKEN,
    OPENAI_KEY,
    Workspace,
    configuration,
    scenario,
    terminal,
    variable_values,
)

Start = Callable[[dict[str, Any]], Workspace]

DISABLED_ID = "666"


def test_rejected_trigger_not_resent(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": terminal("completed")},
            configurations=[configuration(DISABLED_ID, disabled=True)],
        )
    )
    ws.write_job("refused", ["batch_a"], configuration_id=DISABLED_ID)

    first = ws.apply()

    assert first.returncode == 1
    assert ws.sim.count_requests("POST", "/jobs") == 1
    assert ws.sim.keboola_jobs() == []
    status = ws.read_status("refused")
    assert status["status"] == "failed"
    assert status["trigger"]["state"] == "rejected"
    assert "is disabled" in status["error"]["message"]
    assert "is disabled" in first.stdout + first.stderr

    second = ws.apply()

    assert second.returncode == 1
    assert ws.sim.count_requests("POST", "/jobs") == 1
    assert ws.read_status("refused")["status"] == "failed"


def test_rerun_arms_rejected_trigger(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": terminal("completed")},
            faults=[{"service": "keboola", "method": "POST", "path": "^/jobs$", "status": 400, "times": 1}],
        )
    )
    ws.write_job("again", ["batch_a"])
    ws.apply()
    rejected = ws.read_status("again")["trigger"]
    assert rejected["state"] == "rejected"

    rerun = ws.tc("rerun", "again")

    assert rerun.returncode == 0, rerun.stderr
    assert ws.sim.count_requests("POST", "/jobs") == 1

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    assert ws.sim.count_requests("POST", "/jobs") == 2
    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    status = ws.read_status("again")
    assert status["status"] == "completed"
    assert status["trigger"]["id"] != rejected["id"]
    assert status["trigger"]["keboola_job_id"] == records[0]["id"]
    assert status["error"] is None


def test_parallel_applies_trigger_once(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": terminal("completed"), "batch_b": terminal("failed")},
            # Slow answers keep one process's send open while the other runs.
            faults=[{"service": "keboola", "method": "POST", "path": "^/jobs$", "latency": 0.3}],
        )
    )
    names = ["race-1", "race-2", "race-3"]
    for name in names:
        ws.write_job(name, ["batch_a", "batch_b"])

    processes = [ws.start_tc("apply"), ws.start_tc("apply")]
    outputs = [process.communicate(timeout=60) for process in processes]

    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
    for name in names:
        assert len(ws.sim.keboola_jobs_of(name)) == 1, name
    assert ws.sim.count_requests("POST", "/jobs") == len(names)

    ws.apply()

    for name in names:
        assert ws.read_status(name)["status"] == "completed_with_failures", name
    assert len(ws.sim.keboola_jobs()) == len(names)


def test_lost_answer_found_by_search(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": terminal("completed")},
            faults=[{"service": "keboola", "after_commit": {"drop": True}, "times": 1}],
        )
    )
    # No grace: a search that missed the job would send it again at once.
    ws.env["TC_TRIGGER_LOOKUP_GRACE"] = "0"
    ws.write_job("lost", ["batch_a"])

    first = ws.apply()

    assert first.returncode == 1
    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    unknown = ws.read_status("lost")
    assert unknown["trigger"]["state"] == "unknown"
    assert unknown["status"] == "active"

    second = ws.apply()

    assert second.returncode == 0, second.stderr
    assert ws.sim.count_requests("POST", "/jobs") == 1
    assert ws.sim.count_requests("GET", "/search/jobs") >= 1
    assert len(ws.sim.keboola_jobs()) == 1
    found = ws.read_status("lost")
    assert found["status"] == "completed"
    assert found["trigger"]["state"] == "accepted"
    assert found["trigger"]["id"] == unknown["trigger"]["id"]
    assert found["trigger"]["keboola_job_id"] == records[0]["id"]
    assert variable_values(records[0])["teckochecker_trigger_id"] == unknown["trigger"]["id"]


def test_lagging_search_delays_resend(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": terminal("completed")},
            search_lag_seconds=2.0,
            faults=[{"service": "keboola", "after_commit": {"drop": True}, "times": 1}],
        )
    )
    ws.write_job("patient", ["batch_a"])
    ws.apply()

    # Within the default 60 s grace, a search that does not list the job yet
    # must not lead to a second POST.
    second = ws.apply()

    assert second.returncode == 1
    assert ws.sim.count_requests("POST", "/jobs") == 1
    assert ws.read_status("patient")["trigger"]["state"] == "unknown"

    ws.apply_until(lambda: ws.read_status("patient")["trigger"]["state"] == "accepted")

    assert ws.sim.count_requests("POST", "/jobs") == 1
    assert len(ws.sim.keboola_jobs()) == 1
    assert ws.read_status("patient")["status"] == "completed"


def test_missing_secret_spares_other_jobs(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("keyless", ["batch_a"], api_key="env:E2E_MISSING_OPENAI_KEY")
    ws.write_job("tokenless", ["batch_a"], token="env:E2E_MISSING_KEBOOLA_TOKEN")
    ws.write_job("keyed", ["batch_a"])

    result = ws.apply()

    assert result.returncode == 1
    assert len(ws.sim.keboola_jobs_of("keyed")) == 1
    assert ws.sim.keboola_jobs_of("keyless") == []
    assert ws.sim.keboola_jobs_of("tokenless") == []
    assert ws.read_status("keyed")["status"] == "completed"
    keyless = ws.read_status("keyless")
    assert keyless["status"] == "active"
    assert "E2E_MISSING_OPENAI_KEY" in keyless["error"]["message"]
    tokenless = ws.read_status("tokenless")
    assert "E2E_MISSING_KEBOOLA_TOKEN" in tokenless["error"]["message"]
    listed = ws.jobs_by_name()
    assert "E2E_MISSING_OPENAI_KEY" in listed["keyless"]["error"]["message"]


def test_secret_values_never_shown(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed"), "batch_b": terminal("failed")}))
    ws.write_job("visible", ["batch_a", "batch_b"])
    ws.write_job("keyless", ["batch_a"], api_key="env:E2E_MISSING_OPENAI_KEY")
    # An unknown batch id makes OpenAI answer 404, which is shown as an error.
    ws.write_job("unknown-batch", ["batch_a", "batch_nowhere"])

    applied = ws.apply()
    shown = [
        applied.stdout,
        applied.stderr,
        ws.tc("status", "-o", "json").stdout,
        ws.tc("status", "-o", "yaml").stdout,
        ws.tc("status").stdout,
        ws.tc("status", "unknown-batch").stdout,
    ]
    shown.extend(path.read_text() for path in ws.job_dir.glob("*.status.yaml"))

    assert len(shown) == 9
    assert "batch_nowhere" in ws.read_status("unknown-batch")["batches"][1]["error"]
    for text in shown:
        assert OPENAI_KEY not in text
        assert KEBOOLA_TOKEN not in text
        assert KEBOOLA_TOKEN.rsplit("-", 1)[-1] not in text
