"""When the daemon's next cycle is due, read from the state database.

Each job names the moment it next needs a cycle: a poll of its unfinished
batches, a trigger to send, a sender's lease that runs out, an unknown trigger
to search for, or a Keboola job to read again. The daemon sleeps until the
earliest of these. The functions here are pure, so tests pass the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reconciler.health import StoreCounts
from reconciler.settings import Settings
from reconciler.spec import JobSpec
from reconciler.statuses import TERMINAL_STATUSES
from reconciler.store import BatchRow, JobRow, Store, TriggerRow
from reconciler.timeutil import from_iso

DEFAULT_POLL_INTERVAL = float(JobSpec.model_fields["poll_interval_seconds"].default)
EARLIEST = datetime.min.replace(tzinfo=UTC)
"""Stands for a moment the database leaves empty: due at once."""


@dataclass(frozen=True)
class Snapshot:
    """The rows of the state database that decide the schedule and the gauges."""

    jobs: list[JobRow]
    batches: dict[str, list[BatchRow]]
    triggers: dict[str, TriggerRow]

    @classmethod
    def read(cls, store: Store) -> Snapshot:
        """Read every job, its batches and its current trigger."""
        jobs = list(store.jobs().values())
        triggers = {}
        for job in jobs:
            trigger = store.trigger(job.trigger_id) if job.trigger_id else None
            if trigger is not None:
                triggers[job.name] = trigger
        return cls(jobs, store.all_batches(), triggers)

    def counts(self) -> StoreCounts:
        """Count jobs by status, batches by status and triggers by state."""
        jobs: dict[str, int] = {}
        batches: dict[str, int] = {}
        triggers: dict[str, int] = {}
        for job in self.jobs:
            jobs[job.status] = jobs.get(job.status, 0) + 1
        for rows in self.batches.values():
            for batch in rows:
                status = batch.status or "unknown"
                batches[status] = batches.get(status, 0) + 1
        for trigger in self.triggers.values():
            triggers[trigger.state] = triggers.get(trigger.state, 0) + 1
        return StoreCounts(jobs, batches, triggers)


@dataclass(frozen=True, order=True)
class Due:
    """A moment at which a job needs a cycle, and why."""

    at: datetime
    job: str = field(compare=False)
    reason: str = field(compare=False)


def job_due(
    job: JobRow,
    batches: Sequence[BatchRow],
    trigger: TriggerRow | None,
    settings: Settings,
    *,
    last_cycle: datetime | None,
) -> Due | None:
    """Return when a job next needs a cycle, or None when it waits for nothing.

    A job that has only an invalid file and no last valid spec, a suspended
    job and a settled job wait for nothing. Any other job is due at the first
    of these moments:

    - its next poll;
    - its batches are terminal and no trigger was sent (after a rate limit's
      ``not before``);
    - a sender's lease runs out;
    - an unknown trigger is searched for again, every ``keboola_poll_seconds``
      and at the end of the lookup grace;
    - its Keboola job is read again. A moment the database leaves empty,
    such as the next check of a job never polled, is due at once.

    A moment that was already due when the last cycle started has not been
    handled by it, for example because a secret is missing: it is moved one
    interval past that cycle, so a broken job never makes the loop spin.
    """
    spec = job.spec
    if spec is None or spec.get("suspend"):
        return None
    interval = timedelta(
        seconds=float(spec.get("poll_interval_seconds") or DEFAULT_POLL_INTERVAL)
    )
    keboola_wait = timedelta(seconds=settings.keboola_poll_seconds)
    pending = any(b.status not in TERMINAL_STATUSES for b in batches)
    candidates: list[tuple[datetime, str, timedelta]] = []
    if pending:
        candidates.append((_moment(job.next_check_at), "poll", interval))
    if trigger is None and batches and not pending:
        candidates.append((_moment(job.trigger_not_before), "trigger", interval))
    elif trigger is not None and trigger.state == "sending":
        candidates.append((_moment(trigger.lease_until), "lease", keboola_wait))
    elif trigger is not None and trigger.state == "unknown":
        sent = _moment(trigger.sent_at or trigger.claimed_at)
        at = sent + timedelta(seconds=settings.trigger_lookup_grace)
        if last_cycle is not None:
            at = min(at, last_cycle + keboola_wait)
        candidates.append((at, "lookup", keboola_wait))
    elif (
        trigger is not None
        and trigger.state == "accepted"
        and not trigger.keboola_finished
    ):
        checked = _moment(trigger.keboola_checked_at)
        candidates.append((checked + keboola_wait, "keboola", keboola_wait))

    dues = []
    for at, reason, retry in candidates:
        if last_cycle is not None and at <= last_cycle:
            at = last_cycle + retry
        dues.append(Due(at, job.name, reason))
    return min(dues) if dues else None


def _moment(text: str | None) -> datetime:
    return from_iso(text) if text else EARLIEST


def next_due(
    snapshot: Snapshot,
    settings: Settings,
    *,
    last_cycle: datetime | None,
) -> Due | None:
    """Return the earliest moment any job needs a cycle, or None."""
    dues = [
        job_due(
            job,
            snapshot.batches.get(job.name, []),
            snapshot.triggers.get(job.name),
            settings,
            last_cycle=last_cycle,
        )
        for job in snapshot.jobs
    ]
    return min((d for d in dues if d is not None), default=None)
