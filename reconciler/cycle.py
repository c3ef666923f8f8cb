"""One reconcile pass: job files in, status files out.

A cycle loads and validates every job file, diffs them against the state
database and applies the diff, polls the batches that are due, takes every
job's trigger a step further, derives each job's status and error, and
rewrites the status files whose content changed.

A problem with one job (an invalid file, a missing secret, a batch that
cannot be polled, a rejected trigger) is recorded on that job; the others go
on. Only a problem with the state database stops the cycle.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler import failpoints, settled, status_files
from reconciler.adopt import adopt, read_status_file
from reconciler.catalog import Endpoints, endpoints_for, load_directory
from reconciler.errors import HostNotAllowedError, SecretError, StoreError
from reconciler.http_pool import HttpPool, Transport
from reconciler.jobstate import all_terminal, derive_status, is_idle, job_problems
from reconciler.keboola_api import KeboolaClient
from reconciler.openai_api import Batch
from reconciler.plan import Change, make_plan
from reconciler.polling import Account, Poller, PollFailure
from reconciler.report import CycleReport, JobReport, PhaseClock
from reconciler.retrying import RetryPolicy
from reconciler.secrets import SecretResolver
from reconciler.settings import Settings
from reconciler.spec import JobFile, JobSpec, status_path_for
from reconciler.status_document import build_document
from reconciler.statuses import TERMINAL_STATUSES
from reconciler.store import JobRow, Store
from reconciler.timeutil import from_iso, from_unix, to_iso, utc_now
from reconciler.trigger import Target, TriggerProtocol

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """A job's working state during one cycle."""

    row: JobRow
    spec: JobSpec | None
    job_file: JobFile | None
    endpoints: Endpoints | None = None
    api_key: str | None = None
    token: str | None = None
    problems: list[str] = field(default_factory=list)
    report: JobReport | None = None


class Cycle:
    """One reconcile pass over a job directory.

    Args:
        job_dir: the directory of job files.
        settings: the operator's settings.
        resolver: resolves secret references.
        transport: an httpx transport for tests; None for the network.
        due_only: poll only the jobs whose next check is due (the daemon);
            ``tc apply`` polls every job now.
    """

    def __init__(
        self,
        job_dir: Path,
        settings: Settings,
        *,
        resolver: SecretResolver | None = None,
        transport: Transport | None = None,
        due_only: bool = False,
    ) -> None:
        self.job_dir = job_dir
        self.settings = settings
        self.resolver = resolver or SecretResolver()
        self.transport = transport
        self.due_only = due_only

    def plan(self, *, allow_empty: bool = False) -> CycleReport:
        """Compute the plan only; open the database read-only if it exists."""
        files = load_directory(self.job_dir, self.settings)
        stored: dict[str, JobRow] = {}
        if self.settings.database_path.exists():
            store = Store.open(self.settings.state_dir)
            try:
                stored = store.jobs()
            finally:
                store.close()
        plan = make_plan(files, stored, allow_empty=allow_empty)
        invalid = [f for f in files if f.error is not None]
        return CycleReport(plan=plan, dry_run=True, invalid_files=invalid)

    async def run(self, store: Store, *, allow_empty: bool = False) -> CycleReport:
        """Run one cycle against an open store."""
        clock = PhaseClock()
        stored = store.jobs()
        known = {
            name: (row.revision, row.spec)
            for name, row in stored.items()
            if row.spec is not None and row.file_error is None
        }
        files = load_directory(self.job_dir, self.settings, known)
        plan = make_plan(files, stored, allow_empty=allow_empty)
        report = CycleReport(
            plan=plan, dry_run=False, invalid_files=[f for f in files if f.error]
        )
        if plan.prune_blocked:
            log.warning(
                "No job files found in %s while %d jobs exist; nothing is pruned "
                "(pass --allow-empty to prune them)",
                self.job_dir,
                len(plan.held_back),
            )
        by_name = {f.name: f for f in files}
        for change in plan.changes:
            self._apply_change(store, change, by_name.get(change.name))

        jobs = self._working_jobs(store, by_name)
        for job in jobs.values():
            self._rearm(store, job)
            if _has_work(store, job):
                self._resolve(job)
        clock.lap("sync", report)

        async with HttpPool(self.settings, transport=self.transport) as pool:
            await self._poll(store, pool, jobs)
            clock.lap("poll", report)
            await self._advance_triggers(store, pool, jobs)
            clock.lap("trigger", report)

        for job in jobs.values():
            report.jobs.append(self._settle(store, job))
        store.prune_events()
        with _status_lock(self.settings.state_dir):
            status_files.remove_stale_temporaries(self.job_dir)
            for job in jobs.values():
                try:
                    written = self._write_status_file(store, job)
                except OSError as error:
                    # One unwritable file must not keep the others stale.
                    path = self._status_path(job.row.name)
                    reason = error.strerror or str(error)
                    message = f"cannot write status file {path}: {reason}"
                    log.error("Job %s: %s", job.row.name, message)
                    report.status_file_errors.append(message)
                    continue
                if written is not None:
                    report.status_files_written.append(written)
            loaded = {
                f.name: (f.path, status_path_for(f.path))
                for f in files
                if f.spec is not None
            }
            settled.record(store, self.job_dir, self.settings, report, loaded)
        clock.lap("status", report)
        return report

    # Sync

    def _apply_change(
        self, store: Store, change: Change, job_file: JobFile | None
    ) -> None:
        name = change.name
        if change.action == "delete":
            row = store.job(name)
            store.delete_job(name)
            if row is not None:
                status_files.remove(self._status_path(name))
            log.info("Job %s removed: its job file is gone", name)
            return
        if change.action == "noop" or job_file is None:
            return
        error = str(job_file.error) if job_file.error else None
        spec = job_file.spec
        with store.transaction():
            # Another process may have created the job since the plan was
            # made; then this is an update of its row.
            exists = store.job(name) is not None
            if change.action == "create" and not exists:
                store.insert_job(
                    name,
                    path=str(job_file.path),
                    revision=job_file.revision,
                    spec=spec.model_dump(mode="json") if spec else None,
                    spec_revision=job_file.revision if spec else None,
                    file_error=error,
                    status="invalid" if error else "active",
                )
                store.add_event(
                    name, "created", f"job created at revision {job_file.revision}"
                )
            elif spec is None:
                store.update_job(
                    name,
                    path=str(job_file.path),
                    revision=job_file.revision,
                    file_error=error,
                )
                store.add_event(
                    name,
                    "invalid",
                    f"revision {job_file.revision} is invalid; "
                    "the last valid spec stays in force",
                )
            else:
                store.update_job(
                    name,
                    path=str(job_file.path),
                    revision=job_file.revision,
                    spec=spec.model_dump(mode="json"),
                    spec_revision=job_file.revision,
                    file_error=None,
                    # A new spec may list new batches: poll it in this cycle,
                    # also in the daemon, which polls only jobs that are due.
                    next_check_at=None,
                )
                store.add_event(
                    name,
                    "updated",
                    f"revision {job_file.revision}: " + "; ".join(change.details),
                )
            if spec is not None:
                store.set_batch_ids(name, list(spec.batch_ids))
            if change.action == "create" and not exists and spec is not None:
                self._take_over_status_file(store, name, spec)
        # An invalid file becomes the job's error, which _settle logs once.
        if not error:
            log.info(
                "Job %s %sd at revision %s", name, change.action, job_file.revision
            )

    def _take_over_status_file(self, store: Store, name: str, spec: JobSpec) -> None:
        """Take over what a new job's status file records (see ``adopt``)."""
        document = read_status_file(self._status_path(name), name)
        if document is None:
            return
        try:
            target: Target | None = _target(spec, endpoints_for(spec, self.settings))
        except HostNotAllowedError:
            target = None
        message = adopt(store, name, spec.batch_ids, target, document)
        if message is not None:
            store.add_event(name, "adopted", message)
            log.warning("Job %s: %s", name, message)

    def _status_path(self, name: str) -> Path:
        return self.job_dir / f"{name}.status.yaml"

    def _working_jobs(
        self, store: Store, files: Mapping[str, JobFile]
    ) -> dict[str, _Job]:
        jobs: dict[str, _Job] = {}
        for name, row in store.jobs().items():
            # The last valid spec stays in force even if a setting now
            # allows fewer batch ids; only its file is judged by the new limit.
            spec = (
                JobSpec.model_validate(row.spec, context={"max_batch_ids": 10**6})
                if row.spec
                else None
            )
            jobs[name] = _Job(row=row, spec=spec, job_file=files.get(name))
        return jobs

    def _rearm(self, store: Store, job: _Job) -> None:
        """Arm a new trigger when the triggered batch set or target changed."""
        if job.spec is None or job.row.trigger_id is None:
            return
        trigger = store.trigger(job.row.trigger_id)
        if trigger is None or trigger.state not in ("accepted", "rejected"):
            return
        try:
            endpoints = endpoints_for(job.spec, self.settings)
        except HostNotAllowedError:
            return
        target = _target(job.spec, endpoints).as_dict()
        changed_set = set(trigger.batch_ids) != set(job.spec.batch_ids)
        changed_target = trigger.target != target
        changed_file = trigger.revision != job.row.spec_revision
        if trigger.state == "accepted" and not (changed_set or changed_target):
            return
        if trigger.state == "rejected" and not changed_file:
            return
        store.disarm_trigger(job.row.name)
        what = (
            "batch set or Keboola target changed"
            if trigger.state == "accepted"
            else "job file changed after a rejected trigger"
        )
        store.add_event(job.row.name, "trigger", f"{what}; a new trigger is armed")
        log.info("Job %s: %s; a new trigger is armed", job.row.name, what)
        refreshed = store.job(job.row.name)
        assert refreshed is not None
        job.row = refreshed

    def _resolve(self, job: _Job) -> None:
        """Choose the endpoints and resolve the secrets of an active job."""
        if job.spec is None or job.spec.suspend:
            return
        try:
            job.endpoints = endpoints_for(job.spec, self.settings)
            job.api_key = self.resolver.resolve(
                job.spec.openai.api_key, field="openai.api_key"
            )
            job.token = self.resolver.resolve(
                job.spec.keboola.token, field="keboola.token"
            )
        except (SecretError, HostNotAllowedError) as error:
            # Recorded as the job's error, which _settle logs when it changes.
            job.problems.append(str(error))
            job.endpoints = None

    # Poll

    def _due(self, job: _Job, now: datetime) -> bool:
        if not self.due_only or job.row.next_check_at is None:
            return True
        return from_iso(job.row.next_check_at) <= now

    async def _poll(self, store: Store, pool: HttpPool, jobs: dict[str, _Job]) -> None:
        """Poll every due, non-terminal batch once, however many jobs list it."""
        now = utc_now()
        wanted: dict[Account, dict[str, list[str]]] = {}
        created: dict[str, int | None] = {}
        polled_jobs: list[_Job] = []
        for job in jobs.values():
            if job.endpoints is None or job.api_key is None or not self._due(job, now):
                continue
            pending = []
            for batch in store.batches(job.row.name):
                if batch.status not in TERMINAL_STATUSES:
                    pending.append(batch.batch_id)
                    created[batch.batch_id] = batch.created_at
            if not pending:
                continue
            polled_jobs.append(job)
            account = Account(job.endpoints.openai_base_url, job.api_key)
            for batch_id in pending:
                wanted.setdefault(account, {}).setdefault(batch_id, []).append(
                    job.row.name
                )

        poller = Poller(
            pool,
            RetryPolicy.from_settings(self.settings),
            strategy=self.settings.poll_strategy,
            workers=self.settings.concurrency,
        )
        results = await poller.poll(
            {
                account: {batch_id: created[batch_id] for batch_id in batches}
                for account, batches in wanted.items()
            }
        )
        with store.transaction():
            for account, batches in wanted.items():
                for batch_id, job_names in batches.items():
                    result = results[account][batch_id]
                    if isinstance(result, PollFailure):
                        self._record_poll_error(
                            store, batch_id, job_names, result.message
                        )
                    else:
                        self._record_batch(store, result, job_names)

            failpoints.reach("poll.recorded")
            checked = to_iso(utc_now())
            for job in polled_jobs:
                assert job.spec is not None
                interval = timedelta(seconds=job.spec.poll_interval_seconds)
                store.update_job(
                    job.row.name,
                    last_checked_at=checked,
                    next_check_at=to_iso(utc_now() + interval),
                )

    def _record_batch(self, store: Store, batch: Batch, job_names: list[str]) -> None:
        counts = batch.request_counts
        values: dict[str, Any] = {
            "status": batch.status,
            "request_counts": (
                {
                    "total": counts.total,
                    "completed": counts.completed,
                    "failed": counts.failed,
                }
                if counts is not None
                else None
            ),
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "terminal_at": from_unix(batch.terminal_at),
            "created_at": batch.created_at,
            "error": None,
            "polled_at": to_iso(utc_now()),
        }
        for name in job_names:
            before = store.batch(name, batch.id)
            store.update_batch(name, batch.id, **values)
            if before is not None and before.status != batch.status:
                store.add_event(
                    name,
                    "batch",
                    f"{batch.id}: {before.status or 'unknown'} -> {batch.status}",
                )
                log.info("Job %s: batch %s is %s", name, batch.id, batch.status)

    def _record_poll_error(
        self, store: Store, batch_id: str, job_names: list[str], text: str
    ) -> None:
        for name in job_names:
            before = store.batch(name, batch_id)
            store.update_batch(name, batch_id, error=text, polled_at=to_iso(utc_now()))
            if before is not None and before.error != text:
                store.add_event(name, "error", f"{batch_id}: {text}")
        log.error(
            "Batch %s of job(s) %s cannot be polled: %s",
            batch_id,
            ", ".join(job_names),
            text,
        )

    # Trigger

    async def _advance_triggers(
        self, store: Store, pool: HttpPool, jobs: dict[str, _Job]
    ) -> None:
        protocol = TriggerProtocol(store, self.settings)
        policy = RetryPolicy.from_settings(self.settings)
        now = utc_now()
        calls = []
        for job in jobs.values():
            if job.spec is None or job.endpoints is None or job.token is None:
                continue
            batches = store.batches(job.row.name)
            if job.row.trigger_id is None and not all_terminal(batches):
                continue
            queue = KeboolaClient(
                pool, queue_url=job.endpoints.queue_url, token=job.token, policy=policy
            )
            target = _target(job.spec, job.endpoints)
            follow = self._follow_due(store, job, now)
            calls.append(
                self._advance_one(protocol, job, batches, target, queue, follow)
            )
        if calls:
            await asyncio.gather(*calls)

    async def _advance_one(
        self,
        protocol: TriggerProtocol,
        job: _Job,
        batches: Any,
        target: Target,
        queue: KeboolaClient,
        follow: bool,
    ) -> None:
        try:
            outcome = await protocol.advance(
                job.row.name, batches, target, queue, follow_due=follow
            )
        except StoreError:
            # Without the database no trigger can be claimed safely, so the
            # cycle stops instead of going on with the other jobs.
            raise
        except Exception as error:  # one job must never stop the cycle
            log.exception("Unexpected error in the trigger of job %s", job.row.name)
            job.problems.append(
                f"unexpected error in the trigger: {type(error).__name__}"
            )
            return
        if outcome.error:
            job.problems.append(outcome.error)
        if outcome.message:
            job.report = job.report or JobReport(job.row.name, "", None, None)
            job.report.messages.append(outcome.message)

    def _follow_due(self, store: Store, job: _Job, now: datetime) -> bool:
        if not self.due_only or job.row.trigger_id is None:
            return True
        trigger = store.trigger(job.row.trigger_id)
        if trigger is None or trigger.keboola_checked_at is None:
            return True
        wait = timedelta(seconds=self.settings.keboola_poll_seconds)
        return from_iso(trigger.keboola_checked_at) + wait <= now

    # Settle

    def _settle(self, store: Store, job: _Job) -> JobReport:
        """Derive and record the job's status and error after this cycle.

        Reads and writes happen in one transaction, so a process that lost a
        race cannot write a status derived from rows another one changed.
        """
        with store.transaction():
            return self._settle_locked(store, job)

    def _settle_locked(self, store: Store, job: _Job) -> JobReport:
        name = job.row.name
        row = store.job(name)
        assert row is not None
        batches = store.batches(name)
        trigger = store.trigger(row.trigger_id) if row.trigger_id else None
        status = derive_status(
            file_invalid=row.file_error is not None,
            suspended=bool(job.spec and job.spec.suspend),
            batches=batches,
            trigger=trigger,
        )
        problems = job_problems(
            file_error=row.file_error,
            cycle_problems=job.problems,
            status=status,
            batches=batches,
            trigger=trigger,
        )
        message = "\n".join(problems) or None
        since = (
            row.error_since
            if message and message == row.error_message
            else (to_iso(utc_now()) if message else None)
        )

        # A job with nothing left to poll or follow has no next check.
        idle = is_idle(status, batches, trigger)
        changes: dict[str, Any] = {}
        if (status, message, since) != (row.status, row.error_message, row.error_since):
            changes.update(status=status, error_message=message, error_since=since)
        if idle and row.next_check_at is not None:
            changes["next_check_at"] = None
        with store.transaction():
            if changes:
                store.update_job(name, **changes)
            if status != row.status:
                store.add_event(name, "status", f"{row.status} -> {status}")
            if message and message != row.error_message:
                store.add_event(name, "error", message)
            elif row.error_message and not message:
                store.add_event(name, "error", "error cleared")
        if status != row.status:
            log.info("Job %s: status %s -> %s", name, row.status, status)
        if message and message != row.error_message:
            log.error("Job %s: %s", name, message)
        report = job.report or JobReport(name, status, None, None)
        report.status = status
        report.previous_status = row.status
        report.error = message
        return report

    def _write_status_file(self, store: Store, job: _Job) -> Path | None:
        row = store.job(job.row.name)
        # A job whose file this cycle did not find (pruning held back) gets
        # no status file. The status file sits beside the job file found in
        # this cycle's directory, not at the path an earlier run stored,
        # which may be relative to another working directory.
        if row is None or job.job_file is None:
            return None
        job_path = job.job_file.path
        trigger = store.trigger(row.trigger_id) if row.trigger_id else None
        document = build_document(row, store.batches(row.name), trigger)
        path = status_path_for(job_path)
        written, digest = status_files.write_document(
            path, document, job_path.name, row.status_digest
        )
        if digest != row.status_digest:
            store.update_job(row.name, status_digest=digest)
        return path if written else None


def _has_work(store: Store, job: _Job) -> bool:
    """Tell whether a job has batches to poll or a trigger to send or follow.

    A settled job needs no secrets, so a token removed after its trigger
    does not turn a finished job into an error.
    """
    if not all_terminal(store.batches(job.row.name)):
        return True
    if job.row.trigger_id is None:
        return True
    trigger = store.trigger(job.row.trigger_id)
    if trigger is None:
        return True
    if trigger.state in ("sending", "unknown"):
        return True
    return trigger.state == "accepted" and not trigger.keboola_finished


def _target(spec: JobSpec, endpoints: Endpoints) -> Target:
    return Target(
        queue_url=endpoints.queue_url,
        component_id=spec.keboola.component_id,
        configuration_id=spec.keboola.configuration_id,
    )


@contextmanager
def _status_lock(state_dir: Path) -> Iterator[None]:
    """Serialise status-file writes of processes sharing a state directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "status.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
