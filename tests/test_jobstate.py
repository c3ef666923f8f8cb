"""A job's status and error, derived from its rows."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.jobstate import derive_status, job_problems, summarize
from reconciler.store import BatchRow, TriggerRow


def _batch(status: str | None, error: str | None = None, name: str = "b") -> BatchRow:
    return BatchRow(
        "j", f"batch_{name}", 0, status, None, None, None, None, error, None
    )


def _trigger(**overrides: Any) -> TriggerRow:
    values: dict[str, Any] = {
        "id": "tct-1",
        "job": "j",
        "revision": "r",
        "batch_ids": ["batch_b"],
        "target": {},
        "state": "accepted",
        "claimed_at": "2026-01-01T00:00:00Z",
        "sent_at": "2026-01-01T00:00:00Z",
        "lease_until": None,
        "attempts": 1,
        "keboola_job_id": "9",
        "keboola_status": "success",
        "keboola_message": None,
        "keboola_finished": True,
        "keboola_checked_at": None,
        "parameters": {"batch_count_failed": "0"},
        "last_error": None,
        "superseded": False,
    }
    values.update(overrides)
    return TriggerRow(**values)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"file_invalid": True, "suspended": True}, "invalid", id="invalid"
        ),
        pytest.param({"suspended": True}, "paused", id="paused"),
        pytest.param({"trigger": _trigger()}, "completed", id="completed"),
        pytest.param(
            {"trigger": _trigger(parameters={"batch_count_failed": "2"})},
            "completed_with_failures",
            id="with-failures",
        ),
        pytest.param({"trigger": _trigger(state="rejected")}, "failed", id="rejected"),
        pytest.param({"trigger": _trigger(state="unknown")}, "active", id="unknown"),
        pytest.param({}, "active", id="no-trigger"),
    ],
)
def test_derive_status(kwargs: dict[str, Any], expected: str) -> None:
    arguments: dict[str, Any] = {
        "file_invalid": False,
        "suspended": False,
        "batches": [_batch("completed")],
        "trigger": None,
    }
    arguments.update(kwargs)
    assert derive_status(**arguments) == expected


def test_summary_counts_failed_kinds() -> None:
    batches = [
        _batch("completed", name="a"),
        _batch("expired", name="b"),
        _batch("cancelled", name="c"),
        _batch("in_progress", name="d"),
        _batch(None, name="e"),
    ]
    summary = summarize(batches)
    assert (summary.total, summary.completed, summary.failed, summary.pending) == (
        5,
        1,
        2,
        2,
    )


def test_problems_file_error_first() -> None:
    problems = job_problems(
        file_error="bad file",
        cycle_problems=["missing secret"],
        status="invalid",
        batches=[],
        trigger=None,
    )
    assert problems == ["bad file", "missing secret"]


def test_problems_keboola_failure_shown() -> None:
    trigger = _trigger(keboola_status="error", keboola_message="No value")
    problems = job_problems(
        file_error=None,
        cycle_problems=[],
        status="completed",
        batches=[_batch("completed")],
        trigger=trigger,
    )
    assert problems == ["Keboola job 9 ended with status error: No value"]


def test_problems_polling_errors_until_done() -> None:
    batches = [_batch(None, error="404 not found")]
    active = job_problems(
        file_error=None,
        cycle_problems=[],
        status="active",
        batches=batches,
        trigger=None,
    )
    done = job_problems(
        file_error=None,
        cycle_problems=[],
        status="completed",
        batches=batches,
        trigger=_trigger(),
    )
    assert active == ["1 batch(es) cannot be polled (batch_b); see their errors"]
    assert done == []


def test_problems_rejected_prefix_only_when_sent() -> None:
    sent = _trigger(state="rejected", keboola_message="disabled")
    seeded = _trigger(state="rejected", keboola_message="imported", attempts=0)
    common: dict[str, Any] = {
        "file_error": None,
        "cycle_problems": [],
        "status": "failed",
        "batches": [],
    }
    assert job_problems(trigger=sent, **common) == [
        "Keboola rejected the trigger: disabled"
    ]
    assert job_problems(trigger=seeded, **common) == ["imported"]


def test_problems_deduplicated() -> None:
    problems = job_problems(
        file_error=None,
        cycle_problems=["same", "same"],
        status="active",
        batches=[],
        trigger=None,
    )
    assert problems == ["same"]


def test_problems_repeat_of_file_error_dropped() -> None:
    problems = job_problems(
        file_error="jobs.d/j.yaml: host 127.0.0.1 is not allowed",
        cycle_problems=["host 127.0.0.1 is not allowed", "other"],
        status="invalid",
        batches=[],
        trigger=None,
    )
    assert problems == ["jobs.d/j.yaml: host 127.0.0.1 is not allowed", "other"]
