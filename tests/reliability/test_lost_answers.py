"""Triggers whose outcome is unknown: the search, the grace period, the resend.

Keboola may create the job while its response never arrives (a dropped
connection, a timeout, a 5xx after the commit). `tc` must then find the job by
its trigger id instead of sending again, wait while the search index lags,
send again with the same trigger id only after a search that came back empty
once the grace period has passed, and send nothing while the search fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from reliability_support import (
    TRIGGER_ID_VARIABLE,
    Workspace,
    assert_clean_exit,
    scenario,
    terminal,
    variables_of,
)

StartWorkspace = Callable[..., Workspace]

JOB = "lost"
POST_JOBS = "^/jobs$"
SEARCH = "^/search/jobs$"


def _after_commit(effect: dict[str, Any]) -> dict[str, Any]:
    return {
        "service": "keboola",
        "method": "POST",
        "path": POST_JOBS,
        "times": 1,
        "after_commit": effect,
    }


def _trigger(ws: Workspace) -> dict[str, Any]:
    document = ws.status_files()[JOB]
    trigger: dict[str, Any] = document["trigger"]
    return trigger


def _accepted(ws: Workspace) -> Callable[[], bool]:
    def check() -> bool:
        trigger = _trigger(ws)
        return trigger is not None and bool(trigger["state"] == "accepted")

    return check


@pytest.mark.parametrize(
    "effect",
    [{"drop": True}, {"latency": 3}, {"status": 500}],
    ids=["dropped-connection", "no-response", "500"],
)
def test_lost_answer_found_by_search(
    workspace: StartWorkspace, effect: dict[str, Any]
) -> None:
    ws = workspace(scenario({"batch_a": terminal()}, faults=[_after_commit(effect)]))
    ws.write_job(JOB, ["batch_a"])

    first = ws.apply()

    assert_clean_exit(first)
    assert _trigger(ws)["state"] == "unknown"
    assert "outcome unknown" in ws.status_files()[JOB]["error"]["message"]

    second = ws.apply()

    assert_clean_exit(second)
    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    assert ws.count("keboola", "POST", POST_JOBS) == 1
    assert ws.count("keboola", "GET", SEARCH) == 1
    trigger = _trigger(ws)
    assert trigger["state"] == "accepted"
    assert trigger["keboola_job_id"] == records[0]["id"]
    assert variables_of(records[0])[TRIGGER_ID_VARIABLE] == trigger["id"]


def test_lagging_search_holds_resend(workspace: StartWorkspace) -> None:
    lag = 4.0
    ws = workspace(
        scenario(
            {"batch_a": terminal()},
            search_lag_seconds=lag,
            faults=[_after_commit({"drop": True})],
        ),
        {"TC_TRIGGER_LOOKUP_GRACE": "10"},
    )
    ws.write_job(JOB, ["batch_a"])

    ws.apply()
    waiting = ws.apply()

    assert_clean_exit(waiting)
    assert _trigger(ws)["state"] == "unknown"
    message = ws.status_files()[JOB]["error"]["message"]
    assert "not found in Keboola's job search yet" in message
    assert ws.count("keboola", "POST", POST_JOBS) == 1

    runs = ws.apply_until(_accepted(ws), timeout=30)

    assert all(run.returncode in (0, 1) for run in runs)
    assert ws.count("keboola", "POST", POST_JOBS) == 1
    assert len(ws.sim.keboola_jobs()) == 1
    # One search per cycle, while the index lagged and once it had the job.
    assert ws.count("keboola", "GET", SEARCH) == 1 + len(runs)


def test_empty_search_resends_once(workspace: StartWorkspace) -> None:
    # The 500 response comes before the job is created, so the search stays empty.
    fault = {
        "service": "keboola",
        "method": "POST",
        "path": POST_JOBS,
        "times": 1,
        "status": 500,
    }
    ws = workspace(
        scenario({"batch_a": terminal()}, faults=[fault]),
        {"TC_TRIGGER_LOOKUP_GRACE": "3"},
    )
    ws.write_job(JOB, ["batch_a"])

    ws.apply()
    unknown = _trigger(ws)

    assert unknown["state"] == "unknown"
    assert ws.sim.keboola_jobs() == []

    runs = ws.apply_until(_accepted(ws), timeout=30)

    records = ws.sim.keboola_jobs()
    assert len(records) == 1
    assert ws.count("keboola", "POST", POST_JOBS) == 2
    assert variables_of(records[0])[TRIGGER_ID_VARIABLE] == unknown["id"]
    assert _trigger(ws)["id"] == unknown["id"]
    # Every search before the resend came back empty; none after it.
    assert ws.count("keboola", "GET", SEARCH) == len(runs)
    rows = ws.query("SELECT attempts FROM triggers WHERE job = ?", JOB)
    assert [row["attempts"] for row in rows] == [2]


@pytest.mark.parametrize(
    "post_fault",
    [_after_commit({"drop": True}), {"status": 500, "times": 1}],
    ids=["job-created", "job-not-created"],
)
def test_failing_search_sends_nothing(
    workspace: StartWorkspace, post_fault: dict[str, Any]
) -> None:
    post_fault = {
        "service": "keboola",
        "method": "POST",
        "path": POST_JOBS,
        **post_fault,
    }
    search_fault = {
        "service": "keboola",
        "method": "GET",
        "path": SEARCH,
        "status": 503,
    }
    ws = workspace(
        scenario({"batch_a": terminal()}, faults=[post_fault, search_fault]),
        {"TC_TRIGGER_LOOKUP_GRACE": "1"},
    )
    ws.write_job(JOB, ["batch_a"])
    ws.apply()

    waiting = [ws.apply() for _ in range(3)]

    for run in waiting:
        assert_clean_exit(run)
        assert run.returncode == 1
    assert ws.count("keboola", "POST", POST_JOBS) == 1
    assert _trigger(ws)["state"] == "unknown"
    message = ws.status_files()[JOB]["error"]["message"]
    assert "job search failed" in message
    assert "nothing is sent until it succeeds" in message
    # Each cycle reads the search with retries and gives up.
    searches = ws.count("keboola", "GET", SEARCH)
    assert searches == 3 * int(ws.env["TC_RETRY_ATTEMPTS"])

    ws.sim.clear_faults()
    ws.apply_until(_accepted(ws), timeout=20)

    assert len(ws.sim.keboola_jobs()) == 1
    expected_posts = 1 if "after_commit" in post_fault else 2
    assert ws.count("keboola", "POST", POST_JOBS) == expected_posts
