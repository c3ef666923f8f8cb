"""End-to-end tests of the settled shortcut of `tc apply`.

Once every job is done, `tc apply` reports the recorded state without a
cycle. Every change to what a cycle reads must bring the full cycle back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml
from harness import Workspace, configuration, running, scenario, terminal

Start = Callable[[dict[str, Any]], Workspace]


def apply_json(ws: Workspace, *args: str) -> tuple[dict[str, Any], int]:
    """Run `tc apply -o json` and return its report and exit code."""
    result = ws.apply("-o", "json", *args)
    assert result.stdout, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report, result.returncode


def shortcut(report: dict[str, Any]) -> bool:
    """Tell whether the report comes from the settled shortcut."""
    return "settled" in report["timings"]


def settle(ws: Workspace) -> None:
    """Apply until a cycle is skipped."""
    for _ in range(5):
        report, _ = apply_json(ws)
        if shortcut(report):
            return
    raise AssertionError(f"no cycle was skipped; last report: {report}")


def done_workspace(workspace: Start) -> Workspace:
    ws = workspace(
        scenario(
            {
                "batch_a": terminal("completed"),
                "batch_b": terminal("failed"),
                "batch_c": terminal("completed"),
            },
            configurations=[configuration(), configuration("777")],
        )
    )
    ws.write_job("mixed", ["batch_a", "batch_b"])
    ws.write_job("clean", ["batch_c"])
    return ws


def test_skipped_cycle_report_matches_full_cycle(
    workspace: Start,
) -> None:
    ws = done_workspace(workspace)
    settle(ws)
    # Another entry in the directory brings a full cycle that changes nothing.
    (ws.job_dir / "README.md").write_text("Jobs of the team.\n", encoding="utf-8")
    full, _ = apply_json(ws)
    requests = len(ws.sim.requests())
    before = {p.name: p.read_bytes() for p in ws.job_dir.iterdir()}

    skipped, code = apply_json(ws)

    assert not shortcut(full)
    assert shortcut(skipped)
    assert code == 0
    assert skipped["jobs"] == full["jobs"]
    assert skipped["plan"] == full["plan"]
    assert skipped["ok"] is full["ok"] is True
    assert skipped["status_files_written"] == []
    assert [job["status"] for job in skipped["jobs"]] == [
        "completed",
        "completed_with_failures",
    ]
    assert len(ws.sim.requests()) == requests
    assert {p.name: p.read_bytes() for p in ws.job_dir.iterdir()} == before


def test_skipped_cycle_prints_plan_and_outcome(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)

    result = ws.apply()

    assert result.returncode == 0, result.stderr
    assert "0 to create, 0 to change, 0 to remove, 2 unchanged" in result.stdout
    assert "2 jobs; 0 status files written." in result.stdout


def test_edited_job_file_runs_a_full_cycle(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)

    ws.write_job("clean", ["batch_c"], configuration_id="777")
    report, code = apply_json(ws)

    assert not shortcut(report)
    assert code == 0
    change = {c["job"]: c for c in report["plan"]}["clean"]
    assert change["action"] == "update"
    assert "keboola.configuration_id: '12345' -> '777'" in change["details"]
    assert [job["body"]["config"] for job in ws.sim.keboola_jobs_of("clean")] == [
        "12345",
        "777",
    ]


def test_hand_edited_status_file_rewritten(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)
    original = ws.status_path("clean").read_bytes()

    ws.status_path("clean").write_text("status: completed\n", encoding="utf-8")
    report, _ = apply_json(ws)

    assert not shortcut(report)
    assert report["status_files_written"] == ["jobs.d/clean.status.yaml"]
    assert ws.status_path("clean").read_bytes() == original


def test_deleted_status_file_rewritten(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)
    original = ws.status_path("mixed").read_bytes()

    ws.status_path("mixed").unlink()
    report, _ = apply_json(ws)

    assert not shortcut(report)
    assert ws.status_path("mixed").read_bytes() == original


def test_rerun_after_skip_triggers_again(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)

    rerun = ws.tc("rerun", "clean")
    assert rerun.returncode == 0, rerun.stderr
    report, _ = apply_json(ws)

    assert not shortcut(report)
    assert len(ws.sim.keboola_jobs_of("clean")) == 2
    assert len(ws.sim.keboola_jobs_of("mixed")) == 1


def test_new_job_file_is_created(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)

    ws.write_job("late", ["batch_c"])
    report, _ = apply_json(ws)

    assert not shortcut(report)
    assert {c["job"]: c["action"] for c in report["plan"]}["late"] == "create"
    assert len(ws.sim.keboola_jobs_of("late")) == 1


def test_removed_job_file_removes_the_job(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)

    ws.job_path("clean").unlink()
    report, _ = apply_json(ws)

    assert not shortcut(report)
    assert {c["job"]: c["action"] for c in report["plan"]}["clean"] == "delete"
    assert not ws.status_path("clean").exists()


def test_changed_setting_runs_a_full_cycle(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)

    ws.env["TC_MAX_BATCH_IDS"] = "1"
    report, code = apply_json(ws)

    assert not shortcut(report)
    assert code == 1
    assert [f["path"] for f in report["invalid_files"]] == ["jobs.d/mixed.yaml"]


def test_leftover_temporary_file_removed(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)
    leftover = ws.job_dir / ".clean.status.yaml.k1l2.tmp"
    leftover.write_text("half a file", encoding="utf-8")

    report, _ = apply_json(ws)

    assert not shortcut(report)
    assert not leftover.exists()


def test_pending_batches_polled_every_cycle(workspace: Start) -> None:
    ws = workspace(scenario({"batch_a": terminal("completed"), "batch_r": running()}))
    ws.write_job("waiting", ["batch_a", "batch_r"])

    reports = [apply_json(ws)[0] for _ in range(3)]

    assert not any(shortcut(r) for r in reports)
    assert ws.sim.count_requests("GET", "/v1/batches/batch_r") == 3


def test_suspended_job_is_settled(workspace: Start) -> None:
    ws = workspace(scenario({"batch_r": running()}))
    ws.write_job("held", ["batch_r"], suspend=True)

    settle(ws)
    skipped, _ = apply_json(ws)

    assert shortcut(skipped)
    assert [job["status"] for job in skipped["jobs"]] == ["paused"]
    assert ws.sim.count_requests("GET", "/v1/batches/batch_r") == 0


def test_other_directory_runs_full_cycle(
    workspace: Start,
) -> None:
    ws = done_workspace(workspace)
    settle(ws)
    copy = ws.root / "copy.d"
    copy.mkdir()
    for path in ws.job_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())

    report, _ = apply_json(ws, "copy.d")

    assert not shortcut(report)
    actions = {c["job"]: c["action"] for c in report["plan"]}
    assert actions == {"clean": "noop", "mixed": "noop"}
    status = yaml.safe_load((copy / "clean.status.yaml").read_text())
    assert status["status"] == "completed"


def test_fingerprint_independent_of_hash_seed(workspace: Start) -> None:
    ws = done_workspace(workspace)
    ws.env["TC_ALLOWED_HOSTS"] = "127.0.0.1,a.example.test,b.example.test,c.test"
    ws.env["PYTHONHASHSEED"] = "1"
    settle(ws)

    ws.env["PYTHONHASHSEED"] = "2"
    report, _ = apply_json(ws)

    assert shortcut(report)


def test_status_agrees_after_skipped_cycle(workspace: Start) -> None:
    ws = done_workspace(workspace)
    settle(ws)
    apply_json(ws)

    for job in ws.status_json():
        on_disk = ws.read_status(job["job"])
        assert {key: job[key] for key in on_disk} == on_disk
