"""End-to-end tests of the trigger: rejection, lost responses and secrets."""

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
            faults=[
                {
                    "service": "keboola",
                    "method": "POST",
                    "path": "^/jobs$",
                    "status": 400,
                    "times": 1,
                }
            ],
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


def test_lost_response_found_by_search(workspace: Start) -> None:
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
    assert (
        variable_values(records[0])["teckochecker_trigger_id"]
        == unknown["trigger"]["id"]
    )


def test_empty_search_delays_resend(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": terminal("completed")},
            faults=[
                {"service": "keboola", "after_commit": {"drop": True}, "times": 1},
                # The first search lists nothing, as when the index lags behind.
                {
                    "service": "keboola",
                    "method": "GET",
                    "path": "^/search/jobs$",
                    "wrong_shape": [],
                    "times": 1,
                },
            ],
        )
    )
    ws.write_job("patient", ["batch_a"])
    ws.apply()

    # Within the default grace of 60 s, an empty search must not lead to a
    # second POST.
    second = ws.apply()

    assert second.returncode == 1
    assert ws.sim.count_requests("GET", "/search/jobs") == 1
    assert ws.sim.count_requests("POST", "/jobs") == 1
    waiting = ws.read_status("patient")
    assert waiting["trigger"]["state"] == "unknown"
    assert "not found" in waiting["error"]["message"]

    third = ws.apply()

    assert third.returncode == 0, third.stderr
    assert ws.sim.count_requests("POST", "/jobs") == 1
    assert len(ws.sim.keboola_jobs()) == 1
    assert ws.read_status("patient")["status"] == "completed"


def test_failing_search_never_resends(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": terminal("completed")},
            faults=[
                {"service": "keboola", "after_commit": {"drop": True}, "times": 1},
                {
                    "service": "keboola",
                    "method": "GET",
                    "path": "^/search/jobs$",
                    "status": 500,
                },
            ],
        )
    )
    # Even with no grace at all, a search that fails is no proof that
    # Keboola lacks the job.
    ws.env["TC_TRIGGER_LOOKUP_GRACE"] = "0"
    ws.env["TC_RETRY_ATTEMPTS"] = "1"
    ws.write_job("cautious", ["batch_a"])
    ws.apply()

    second = ws.apply()
    third = ws.apply()

    assert second.returncode == 1
    assert third.returncode == 1
    assert ws.sim.count_requests("GET", "/search/jobs") >= 2
    assert ws.sim.count_requests("POST", "/jobs") == 1
    status = ws.read_status("cautious")
    assert status["trigger"]["state"] == "unknown"
    assert status["status"] == "active"
    assert "search failed" in status["error"]["message"]


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
    ws = workspace(
        scenario({"batch_a": terminal("completed"), "batch_b": terminal("failed")})
    )
    ws.write_job("visible", ["batch_a", "batch_b"])
    ws.write_job("keyless", ["batch_a"], api_key="env:E2E_MISSING_OPENAI_KEY")
    # An unknown batch id makes the simulated OpenAI API return 404, which is
    # shown as an error.
    ws.write_job("unknown-batch", ["batch_a", "batch_nowhere"])

    applied = ws.apply()
    outputs = [
        applied.stdout,
        applied.stderr,
        ws.tc("status", "-o", "json").stdout,
        ws.tc("status", "-o", "yaml").stdout,
        ws.tc("status").stdout,
        ws.tc("status", "unknown-batch").stdout,
    ]
    status_files = sorted(ws.job_dir.glob("*.status.yaml"))
    outputs.extend(path.read_text() for path in status_files)

    assert [path.name for path in status_files] == [
        "keyless.status.yaml",
        "unknown-batch.status.yaml",
        "visible.status.yaml",
    ]
    assert "batch_nowhere" in ws.read_status("unknown-batch")["batches"][1]["error"]
    for text in outputs:
        assert OPENAI_KEY not in text
        assert KEBOOLA_TOKEN not in text
        assert KEBOOLA_TOKEN.rsplit("-", 1)[-1] not in text


def test_rate_limited_trigger_retries_later(workspace: Start) -> None:
    ws = workspace(
        scenario(
            {"batch_a": terminal("completed")},
            faults=[
                {
                    "service": "keboola",
                    "method": "POST",
                    "path": "^/jobs$",
                    "status": 429,
                    "retry_after": 2,
                    "times": 1,
                }
            ],
        )
    )
    ws.write_job("throttled", ["batch_a"])

    first = ws.apply()

    assert first.returncode == 1
    assert ws.sim.keboola_jobs() == []
    status = ws.read_status("throttled")
    assert status["status"] == "active"
    assert status["trigger"] is None

    # A 429 shows that no job was created, so the trigger is sent again once
    # Retry-After has passed.
    ws.apply_until(lambda: ws.read_status("throttled")["status"] == "completed")

    assert ws.sim.count_requests("POST", "/jobs") == 2
    assert len(ws.sim.keboola_jobs()) == 1


def test_unlisted_host_gets_no_token(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed")}))
    ws.write_job("elsewhere", ["batch_a"])
    del ws.env["TC_ALLOWED_HOSTS"]

    result = ws.apply()

    assert result.returncode == 1
    assert ws.sim.requests() == []
    status = ws.read_status("elsewhere")
    assert status["status"] == "invalid"
    assert "TC_ALLOWED_HOSTS=127.0.0.1" in status["error"]["message"]
