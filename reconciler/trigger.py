"""The Keboola trigger: what it sends, and the protocol that sends it once.

The trigger is the one side effect that matters, so it follows a protocol
that survives a kill at any point, a lost response and a second process:

1. The trigger is claimed in the state database before it is sent. The claim
   is one write transaction, so only one process wins it, and it holds a
   lease while that process sends.
2. The request carries a unique trigger id as an extra variable.
3. A 2xx response is ``accepted``; a 4xx other than 429 is ``rejected``; a 429
   means Keboola created nothing, so the claim is released and a new one is
   made after ``Retry-After``.
4. A timeout, a dropped connection, a 5xx, or a ``sending`` claim whose lease
   ran out (its process died) is ``unknown``. Keboola's job search is asked
   for a job carrying the trigger id. Found: it is recorded. Not found: the
   search repeats until ``TC_TRIGGER_LOOKUP_GRACE`` seconds have passed since
   the send, because the search index lags behind job creation; only then is
   the request sent again, with the same trigger id. A search that fails
   sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from reconciler import failpoints
from reconciler.errors import (
    ApiError,
    OutcomeUnknownError,
    PermanentApiError,
    TransientApiError,
)
from reconciler.keboola_api import KeboolaJob
from reconciler.settings import Settings
from reconciler.statuses import FAILED_STATUSES
from reconciler.store import BatchRow, Store, TriggerRow
from reconciler.timeutil import from_iso, to_iso, utc_now

log = logging.getLogger(__name__)

# Variable names of the original TeckoChecker; Keboola configurations
# written for it define exactly these five.
COMPLETED_IDS = "batch_ids_completed"
FAILED_IDS = "batch_ids_failed"
COUNT_TOTAL = "batch_count_total"
COUNT_COMPLETED = "batch_count_completed"
COUNT_FAILED = "batch_count_failed"

# Extra variables; the prefix keeps them apart from the five above.
TRIGGER_ID = "teckochecker_trigger_id"
JOB_NAME = "teckochecker_job"
BATCH_DETAILS = "teckochecker_batches"

# How far before the claim the job search starts, for clock skew between
# this machine and Keboola.
SEARCH_MARGIN = timedelta(minutes=10)
# Extra time a sender's lease lasts beyond the HTTP timeout.
LEASE_MARGIN = timedelta(seconds=30)
# How often a sender renews its lease; well inside LEASE_MARGIN.
LEASE_RENEWAL = timedelta(seconds=10)
DEFAULT_RATE_LIMIT_WAIT = 60.0


class KeboolaQueue(Protocol):
    """The Keboola Queue API calls the protocol needs."""

    async def create_job(
        self,
        *,
        component_id: str,
        configuration_id: str,
        variables: Sequence[tuple[str, str]],
    ) -> KeboolaJob: ...

    async def get_job(self, job_id: str) -> KeboolaJob: ...

    async def search_jobs(
        self, *, component_id: str, configuration_id: str, created_from: datetime
    ) -> list[KeboolaJob]: ...


@dataclass(frozen=True)
class Target:
    """The Keboola queue, component and configuration a trigger is sent to."""

    queue_url: str
    component_id: str
    configuration_id: str

    def as_dict(self) -> dict[str, str]:
        """Return the target as stored with a trigger."""
        return {
            "queue_url": self.queue_url,
            "component_id": self.component_id,
            "configuration_id": self.configuration_id,
        }


def encode_ids(ids: Sequence[str]) -> str:
    """Encode a list of batch ids as the original TeckoChecker does.

    That is Python's default ``json.dumps``: ``", "`` between items, ASCII
    escapes, ``[]`` when empty.
    """
    return json.dumps(list(ids))


def build_variables(
    job: str, trigger_id: str, batches: Sequence[BatchRow]
) -> list[tuple[str, str]]:
    """Return the variables of a trigger, in the order they are sent.

    The five variables of the original TeckoChecker come first, then the
    trigger id, the job name and per-batch details as JSON. Batch ids are in
    job-file order; failed, cancelled and expired batches count as failed.
    """
    completed = [b.batch_id for b in batches if b.status == "completed"]
    failed = [b.batch_id for b in batches if b.status in FAILED_STATUSES]
    details = [
        {
            "id": b.batch_id,
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "request_counts": b.request_counts,
        }
        for b in batches
    ]
    return [
        (COMPLETED_IDS, encode_ids(completed)),
        (FAILED_IDS, encode_ids(failed)),
        (COUNT_TOTAL, str(len(batches))),
        (COUNT_COMPLETED, str(len(completed))),
        (COUNT_FAILED, str(len(failed))),
        (TRIGGER_ID, trigger_id),
        (JOB_NAME, job),
        (BATCH_DETAILS, json.dumps(details, separators=(",", ":"))),
    ]


def new_trigger_id() -> str:
    """Return a new unique trigger id."""
    return "tct-" + uuid.uuid4().hex


@dataclass(frozen=True)
class Outcome:
    """The result of one ``TriggerProtocol.advance`` call, for the cycle report.

    ``error`` is the problem to show on the job, or None.
    """

    message: str | None = None
    error: str | None = None


class TriggerProtocol:
    """Runs the exactly-once protocol for the jobs of one cycle."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings

    def _lease(self, now: datetime) -> str:
        return to_iso(
            now + timedelta(seconds=self._settings.http_timeout) + LEASE_MARGIN
        )

    @asynccontextmanager
    async def _lease_kept(self, trigger_id: str) -> AsyncIterator[None]:
        """Renew a ``sending`` trigger's lease while the block runs.

        The request may wait for a free HTTP slot before it is sent. A lease
        fixed at the claim could then run out before the send, and another
        process would take the trigger for lost. Renewal stops when the
        process dies, so the lease still runs out after a crash.
        """

        async def renew() -> None:
            while True:
                await asyncio.sleep(LEASE_RENEWAL.total_seconds())
                self._store.update_trigger(
                    trigger_id,
                    expect_state="sending",
                    lease_until=self._lease(utc_now()),
                )

        renewal = asyncio.create_task(renew(), name=f"lease-{trigger_id}")
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    async def advance(
        self,
        job: str,
        batches: Sequence[BatchRow],
        target: Target,
        queue: KeboolaQueue,
        *,
        follow_due: bool = True,
    ) -> Outcome:
        """Take the job's trigger one step further, whatever state it is in.

        Args:
            job: the job name; its batches must all be terminal when it has
                no current trigger, or nothing is claimed.
            batches: the job's batches in job-file order.
            target: where the trigger goes.
            queue: the Keboola client for the target.
            follow_due: whether a running Keboola job should be read now.
        """
        row = self._store.job(job)
        if row is None:
            return Outcome()
        if row.trigger_id is None:
            return await self._claim_and_send(job, batches, target, queue)
        trigger = self._store.trigger(row.trigger_id)
        if trigger is None:
            return Outcome(
                error=f"trigger {row.trigger_id} is missing from the database"
            )
        now = utc_now()
        if trigger.state == "sending":
            if trigger.lease_until and from_iso(trigger.lease_until) > now:
                return Outcome(
                    message=f"trigger {trigger.id} is being sent by another process"
                )
            reason = "the process sending it stopped before recording the outcome"
            if not self._store.update_trigger(
                trigger.id, expect_state="sending", state="unknown", last_error=reason
            ):
                return Outcome()
            log.warning("Trigger %s of job %s: %s", trigger.id, job, reason)
            trigger = self._store.trigger(trigger.id)
            assert trigger is not None
        if trigger.state == "unknown":
            return await self._resolve_unknown(job, trigger, queue)
        if trigger.state == "accepted" and not trigger.keboola_finished and follow_due:
            return await self._follow(job, trigger, queue)
        return Outcome()

    async def _claim_and_send(
        self,
        job: str,
        batches: Sequence[BatchRow],
        target: Target,
        queue: KeboolaQueue,
    ) -> Outcome:
        row = self._store.job(job)
        assert row is not None
        now = utc_now()
        if row.trigger_not_before and from_iso(row.trigger_not_before) > now:
            wait_until = row.trigger_not_before
            return Outcome(
                error=f"Keboola rate-limited the trigger; next try at {wait_until}"
            )
        batch_ids = [b.batch_id for b in batches]
        earlier = self._store.restorable_trigger(job, batch_ids, target.as_dict())
        if earlier is not None and self._store.restore_trigger(job, earlier.id):
            # The file went back to a batch set that was already triggered.
            message = (
                f"batch set and target are those of trigger {earlier.id} "
                f"(Keboola job {earlier.keboola_job_id}) again; nothing is sent"
            )
            self._store.add_event(job, "trigger", message)
            log.info("Job %s: %s", job, message)
            return Outcome(message=message)
        trigger_id = new_trigger_id()
        variables = build_variables(job, trigger_id, batches)
        claimed = self._store.claim_trigger(
            job,
            {
                "id": trigger_id,
                "revision": row.spec_revision,
                "batch_ids": batch_ids,
                "target": target.as_dict(),
                "state": "sending",
                "claimed_at": to_iso(now),
                "sent_at": to_iso(now),
                "lease_until": self._lease(now),
                "attempts": 1,
                "parameters": dict(variables),
            },
        )
        if not claimed:
            return Outcome(message="another process claimed the trigger")
        failpoints.reach("trigger.claimed")
        self._store.add_event(job, "trigger", f"trigger {trigger_id} claimed")
        trigger = self._store.trigger(trigger_id)
        assert trigger is not None
        return await self._send(job, trigger, queue)

    async def _send(
        self, job: str, trigger: TriggerRow, queue: KeboolaQueue
    ) -> Outcome:
        target = trigger.target
        log.info(
            "Sending trigger %s of job %s to %s (component %s, configuration %s)",
            trigger.id,
            job,
            target["queue_url"],
            target["component_id"],
            target["configuration_id"],
        )
        failpoints.reach("trigger.sending")
        try:
            async with self._lease_kept(trigger.id):
                created = await queue.create_job(
                    component_id=target["component_id"],
                    configuration_id=target["configuration_id"],
                    variables=list(trigger.parameters.items()),
                )
        except OutcomeUnknownError as error:
            self._store.update_trigger(
                trigger.id, state="unknown", lease_until=None, last_error=error.message
            )
            self._store.add_event(
                job, "trigger", f"trigger {trigger.id} outcome unknown: {error.message}"
            )
            log.warning(
                "Trigger %s of job %s: outcome unknown (%s); "
                "searching before any resend",
                trigger.id,
                job,
                error.message,
            )
            return Outcome(
                error=f"trigger {trigger.id} outcome unknown: {error.message}"
            )
        except PermanentApiError as error:
            self._store.update_trigger(
                trigger.id,
                state="rejected",
                lease_until=None,
                keboola_message=error.message,
                last_error=error.message,
            )
            self._store.add_event(
                job, "trigger", f"trigger {trigger.id} rejected: {error.message}"
            )
            log.error(
                "Trigger %s of job %s rejected by Keboola: %s",
                trigger.id,
                job,
                error.message,
            )
            return Outcome(error=f"Keboola rejected the trigger: {error.message}")
        except TransientApiError as error:
            wait = error.retry_after or DEFAULT_RATE_LIMIT_WAIT
            not_before = to_iso(utc_now() + timedelta(seconds=wait))
            self._store.release_trigger(job, trigger.id, not_before)
            self._store.add_event(
                job,
                "trigger",
                f"trigger {trigger.id} not created ({error.message}); "
                f"next try at {not_before}",
            )
            log.warning(
                "Trigger %s of job %s not created (%s); retrying after %s",
                trigger.id,
                job,
                error.message,
                not_before,
            )
            return Outcome(
                error=f"Keboola did not create the trigger ({error.message}); "
                f"next try at {not_before}"
            )
        failpoints.reach("trigger.received")
        outcome = self._accept(job, trigger, created, how="accepted")
        failpoints.reach("trigger.recorded")
        return outcome

    def _accept(
        self, job: str, trigger: TriggerRow, created: KeboolaJob, *, how: str
    ) -> Outcome:
        self._store.update_trigger(
            trigger.id,
            state="accepted",
            lease_until=None,
            keboola_job_id=created.id,
            keboola_status=created.status,
            keboola_message=created.message,
            keboola_finished=created.is_finished,
            keboola_checked_at=to_iso(utc_now()),
            last_error=None,
        )
        message = f"trigger {trigger.id} {how}: Keboola job {created.id}"
        self._store.add_event(job, "trigger", message)
        log.info(
            "Trigger %s of job %s %s as Keboola job %s",
            trigger.id,
            job,
            how,
            created.id,
        )
        return Outcome(message=message)

    async def _resolve_unknown(
        self, job: str, trigger: TriggerRow, queue: KeboolaQueue
    ) -> Outcome:
        target = trigger.target
        since = from_iso(trigger.claimed_at) - SEARCH_MARGIN
        try:
            candidates = await queue.search_jobs(
                component_id=target["component_id"],
                configuration_id=target["configuration_id"],
                created_from=since,
            )
            found = await self._find(trigger, candidates, queue)
        except ApiError as error:
            reason = (
                f"cannot confirm whether Keboola received trigger {trigger.id}: "
                f"job search failed ({error.message}); "
                "nothing is sent until it succeeds"
            )
            self._store.update_trigger(trigger.id, last_error=reason)
            log.warning("Job %s: %s", job, reason)
            return Outcome(error=reason)
        if found is not None:
            return self._accept(
                job, trigger, found, how="found after an unknown outcome"
            )

        now = utc_now()
        sent_at = from_iso(trigger.sent_at or trigger.claimed_at)
        grace = timedelta(seconds=self._settings.trigger_lookup_grace)
        if now - sent_at < grace:
            reason = (
                f"trigger {trigger.id} not found in Keboola's job search yet; "
                f"searching again until {to_iso(sent_at + grace)} before sending again"
            )
            self._store.update_trigger(trigger.id, last_error=reason)
            return Outcome(error=reason)

        if not self._store.update_trigger(
            trigger.id,
            expect_state="unknown",
            state="sending",
            sent_at=to_iso(now),
            lease_until=self._lease(now),
            attempts=trigger.attempts + 1,
        ):
            return Outcome()
        self._store.add_event(
            job, "trigger", f"trigger {trigger.id} not found by search; sending again"
        )
        log.warning(
            "Trigger %s of job %s not found after the grace period; sending again",
            trigger.id,
            job,
        )
        resent = self._store.trigger(trigger.id)
        assert resent is not None
        return await self._send(job, resent, queue)

    async def _find(
        self, trigger: TriggerRow, candidates: list[KeboolaJob], queue: KeboolaQueue
    ) -> KeboolaJob | None:
        for candidate in candidates:
            variables = candidate.variables
            if variables is None:
                # The search may omit variables; a job's own record has them.
                variables = (await queue.get_job(candidate.id)).variables or {}
            if variables.get(TRIGGER_ID) == trigger.id:
                return candidate
        return None

    async def _follow(
        self, job: str, trigger: TriggerRow, queue: KeboolaQueue
    ) -> Outcome:
        assert trigger.keboola_job_id is not None
        try:
            current = await queue.get_job(trigger.keboola_job_id)
        except ApiError as error:
            log.warning(
                "Job %s: cannot read Keboola job %s: %s",
                job,
                trigger.keboola_job_id,
                error.message,
            )
            return Outcome(
                error=f"cannot read Keboola job {trigger.keboola_job_id}: "
                f"{error.message}"
            )
        self._store.update_trigger(
            trigger.id,
            keboola_status=current.status,
            keboola_message=current.message,
            keboola_finished=current.is_finished,
            keboola_checked_at=to_iso(utc_now()),
        )
        if current.is_finished:
            message = f"Keboola job {current.id} finished: {current.status}"
            self._store.add_event(
                job,
                "keboola",
                message + (f" ({current.message})" if current.message else ""),
            )
            log.info("Job %s: %s", job, message)
            return Outcome(message=message)
        return Outcome()
