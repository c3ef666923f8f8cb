"""The status document of a job: the mapping its status file and ``tc status`` show.

It is built from database rows only, with its keys in their fixed order.
``status_files`` renders it, and ``tc status`` prints it without importing
the file writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reconciler.jobstate import summarize
from reconciler.store import BatchRow, JobRow, TriggerRow


def build_document(
    job: JobRow, batches: Sequence[BatchRow], trigger: TriggerRow | None
) -> dict[str, Any]:
    """Return the status-file mapping of a job, keys in their fixed order."""
    summary = summarize(batches)
    return {
        "job": job.name,
        "revision": job.revision,
        "status": job.status,
        "summary": {
            "total": summary.total,
            "completed": summary.completed,
            "failed": summary.failed,
            "pending": summary.pending,
        },
        "batches": [_batch(b) for b in batches],
        "trigger": _trigger(trigger),
        "error": (
            {"message": job.error_message, "since": job.error_since}
            if job.error_message
            else None
        ),
    }


def _batch(batch: BatchRow) -> dict[str, Any]:
    counts = batch.request_counts
    entry: dict[str, Any] = {
        "id": batch.batch_id,
        "status": batch.status,
        "request_counts": (
            {
                "total": counts.get("total"),
                "completed": counts.get("completed"),
                "failed": counts.get("failed"),
            }
            if counts is not None
            else None
        ),
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "terminal_at": batch.terminal_at,
    }
    if batch.error:
        entry["error"] = batch.error
    return entry


def _trigger(trigger: TriggerRow | None) -> dict[str, Any] | None:
    if trigger is None:
        return None
    return {
        "id": trigger.id,
        "state": trigger.state,
        "keboola_job_id": trigger.keboola_job_id,
        "keboola_status": trigger.keboola_status,
        "keboola_message": trigger.keboola_message,
        "sent_at": trigger.sent_at,
        "parameters": dict(trigger.parameters),
    }
