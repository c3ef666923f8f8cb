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


def is_idle(
    status: str, batches: Sequence[BatchRow], trigger: TriggerRow | None
) -> bool:
    """Tell whether a job has nothing left to poll, send or follow.

    That is a paused job, or one whose batches are all terminal and whose
    trigger Keboola rejected, or accepted and finished running.
    """
    if status == "paused":
        return True
    settled = trigger is not None and (
        trigger.state == "rejected" or trigger.keboola_finished
    )
    return settled and all_terminal(batches)


KEBOOLA_FAILURES = frozenset({"error", "cancelled", "terminated"})


def job_problems(
    *,
    file_error: str | None,
    cycle_problems: Sequence[str],
    status: str,
    batches: Sequence[BatchRow],
    trigger: TriggerRow | None,
) -> list[str]:
    """Return the problems to show as a job's error, most pressing first.

    Args:
        file_error: the job file's validation error, if any.
        cycle_problems: problems this cycle met (a missing secret, a host
            that is not allowed, a trigger that could not be sent).
        status: the job's status, from ``derive_status``.
        batches: the job's batches.
        trigger: the job's current trigger, if any.
    """
    problems = [file_error] if file_error else []
    # The last valid spec may meet the problem that made the file invalid
    # (a host no longer allowed), so that problem is reported once.
    problems.extend(p for p in cycle_problems if not (file_error and p in file_error))
    if trigger is not None and trigger.state == "rejected" and trigger.keboola_message:
        # A trigger never sent (attempts 0) was seeded by an import.
        prefix = "Keboola rejected the trigger: " if trigger.attempts else ""
        problems.append(prefix + trigger.keboola_message)
    if (
        trigger is not None
        and trigger.state == "unknown"
        and trigger.last_error
        and not cycle_problems
    ):
        problems.append(trigger.last_error)
    if (
        trigger is not None
        and trigger.keboola_finished
        and trigger.keboola_status in KEBOOLA_FAILURES
    ):
        detail = f": {trigger.keboola_message}" if trigger.keboola_message else ""
        problems.append(
            f"Keboola job {trigger.keboola_job_id} ended with status "
            f"{trigger.keboola_status}{detail}"
        )
    failing = [b for b in batches if b.error]
    if failing and status not in ("completed", "completed_with_failures"):
        ids = ", ".join(b.batch_id for b in failing)
        problems.append(
            f"{len(failing)} batch(es) cannot be polled ({ids}); see their errors"
        )
    return list(dict.fromkeys(p for p in problems if p))
