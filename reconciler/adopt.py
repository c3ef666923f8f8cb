"""Taking over what a job's status file records when the database has no row.

The status files are committed to git, so they outlive a lost state database
(a new volume, a deleted ``.tc``). A job that the database meets for the
first time but whose status file records a trigger for the same batch set is
not triggered again: its batches and trigger are taken over from the file.
A trigger the file shows as ``sending`` or ``unknown`` is taken over as
``unknown``, so the exactly-once protocol searches Keboola for its id before
anything is sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reconciler.statuses import TERMINAL_STATUSES
from reconciler.store import Store
from reconciler.timeutil import to_iso, utc_now
from reconciler.trigger import COMPLETED_IDS, FAILED_IDS, Target

log = logging.getLogger(__name__)

_ADOPTED_STATES = {
    "accepted": "accepted",
    "rejected": "rejected",
    "sending": "unknown",
    "unknown": "unknown",
}
_KEBOOLA_FINAL = frozenset({"success", "warning", "error", "cancelled", "terminated"})


def read_status_file(path: Path, job: str) -> dict[str, Any] | None:
    """Return the mapping of a job's status file, or None if it has none usable."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(document, dict) or document.get("job") != job:
        return None
    return document


def adopt(
    store: Store,
    job: str,
    batch_ids: Sequence[str],
    target: Target | None,
    document: dict[str, Any],
) -> str | None:
    """Take over the batches and trigger a status file records for a new job.

    Args:
        store: the state database, where ``job`` was just created.
        job: the job name.
        batch_ids: the batch ids of the job's current spec.
        target: where the job's trigger goes, or None when it is not known
            (then no trigger is taken over).
        document: the status file's mapping.

    Returns:
        A message for the job's history, or None when nothing was taken over.
    """
    adopted_batches = _adopt_batches(store, job, batch_ids, document)
    trigger = document.get("trigger")
    if target is None or not isinstance(trigger, dict):
        return _message(adopted_batches, None)
    state = _ADOPTED_STATES.get(str(trigger.get("state")))
    trigger_id = trigger.get("id")
    parameters = trigger.get("parameters")
    if state is None or not isinstance(trigger_id, str) or not trigger_id:
        return _message(adopted_batches, None)
    if not isinstance(parameters, dict) or _triggered_set(parameters) != set(batch_ids):
        # The file's trigger was for another batch set: a new one is due.
        return _message(adopted_batches, None)

    sent_at = (
        trigger.get("sent_at") if isinstance(trigger.get("sent_at"), str) else None
    )
    keboola_status = trigger.get("keboola_status")
    claimed = store.claim_trigger(
        job,
        {
            "id": trigger_id,
            "revision": None,
            "batch_ids": list(batch_ids),
            "target": target.as_dict(),
            "state": state,
            "claimed_at": sent_at or to_iso(utc_now()),
            "sent_at": sent_at,
            "attempts": 1,
            "keboola_job_id": _text(trigger.get("keboola_job_id")),
            "keboola_status": _text(keboola_status),
            "keboola_message": _text(trigger.get("keboola_message")),
            "keboola_finished": keboola_status in _KEBOOLA_FINAL,
            "parameters": {str(k): str(v) for k, v in parameters.items()},
        },
    )
    return _message(adopted_batches, trigger_id if claimed else None)


def _adopt_batches(
    store: Store, job: str, batch_ids: Sequence[str], document: dict[str, Any]
) -> int:
    entries = document.get("batches")
    if not isinstance(entries, list):
        return 0
    wanted = set(batch_ids)
    adopted = 0
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("id") not in wanted:
            continue
        status = entry.get("status")
        if status not in TERMINAL_STATUSES:
            continue
        counts = entry.get("request_counts")
        store.update_batch(
            job,
            str(entry["id"]),
            status=status,
            request_counts=counts if isinstance(counts, dict) else None,
            output_file_id=_text(entry.get("output_file_id")),
            error_file_id=_text(entry.get("error_file_id")),
            terminal_at=_text(entry.get("terminal_at")),
        )
        adopted += 1
    return adopted


def _triggered_set(parameters: dict[str, Any]) -> set[str] | None:
    try:
        completed = json.loads(str(parameters[COMPLETED_IDS]))
        failed = json.loads(str(parameters[FAILED_IDS]))
    except (KeyError, ValueError):
        return None
    if not isinstance(completed, list) or not isinstance(failed, list):
        return None
    return {str(b) for b in completed} | {str(b) for b in failed}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _message(batches: int, trigger_id: str | None) -> str | None:
    if not batches and trigger_id is None:
        return None
    parts = [f"{batches} finished batch(es)"] if batches else []
    if trigger_id is not None:
        parts.append(f"trigger {trigger_id}")
    return (
        "taken over from the status file, which the state database did not know: "
        + " and ".join(parts)
    )
