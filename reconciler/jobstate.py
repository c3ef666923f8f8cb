"""A job's status and summary, derived from what the state database records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.statuses import FAILED_STATUSES, TERMINAL_STATUSES
from reconciler.store import BatchRow, TriggerRow

JOB_STATUSES = (
    "active",
    "paused",
    "completed",
    "completed_with_failures",
    "failed",
    "invalid",
)


@dataclass(frozen=True)
class Summary:
    """Counts of a job's batches: ``pending`` are those not yet terminal."""

    total: int
    completed: int
    failed: int
    pending: int


def summarize(batches: Sequence[BatchRow]) -> Summary:
    """Count a job's batches by outcome."""
    completed = sum(1 for b in batches if b.status == "completed")
    failed = sum(1 for b in batches if b.status in FAILED_STATUSES)
    total = len(batches)
    return Summary(total, completed, failed, total - completed - failed)


def all_terminal(batches: Sequence[BatchRow]) -> bool:
    """True when the job has batches and every one is terminal."""
    return bool(batches) and all(b.status in TERMINAL_STATUSES for b in batches)


def derive_status(
    *,
    file_invalid: bool,
    suspended: bool,
    batches: Sequence[BatchRow],
    trigger: TriggerRow | None,
) -> str:
    """Return the job status.

    ``invalid`` wins because a person must fix the file; ``paused`` follows
    the file's ``suspend``. A job is ``completed`` (or
    ``completed_with_failures`` when a triggered batch failed) once Keboola
    accepted its trigger, and ``failed`` when Keboola rejected it.
    """
    if file_invalid:
        return "invalid"
    if suspended:
        return "paused"
    if trigger is not None and trigger.state == "accepted":
        failed = trigger.parameters.get("batch_count_failed", "0")
        return "completed" if failed == "0" else "completed_with_failures"
    if trigger is not None and trigger.state == "rejected":
        return "failed"
    return "active"
