"""Simulated Keboola queue jobs: creation, status timelines, kill and search.

Statuses are computed from the clock whenever a job is read, so no timer
thread is needed. A job is ``created`` for half of its ``job_seconds`` and
``processing`` for the other half. The config lock makes a job of the same
component and configuration ``waiting`` until the previous one is final.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.simulator.http_messages import new_exception_id
from reconciler.simulator.job_requests import (
    JobOutcome,
    JobRequest,
    JobRequestError,
    decide_outcome,
    validate_job_request,
)
from reconciler.simulator.job_search import search_jobs
from reconciler.simulator.queue_specs import QueueSpec

FINAL_STATUSES = frozenset({"success", "warning", "error", "cancelled", "terminated"})
KILLABLE_STATUSES = ("created", "waiting", "processing")

_FIRST_JOB_ID = 1_000_001


class JobNotFoundError(Exception):
    """A job id that the queue does not know."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f'Job "{job_id}" not found')
        self.job_id = job_id


@dataclass
class _Job:
    job_id: str
    request: JobRequest
    raw_body: str
    token_number: int
    outcome: JobOutcome
    created_at: float
    job_seconds: float
    exception_id: str
    killed_at: float | None = None


@dataclass(frozen=True)
class _Event:
    time: float
    status: str


class JobQueue:
    """Thread-safe store of simulated queue jobs, read as Keboola job objects."""

    def __init__(self, spec: QueueSpec, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.base_url = "http://127.0.0.1"
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._next_id = _FIRST_JOB_ID

    def token_number(self, token: str | None) -> int | None:
        """Return the 1-based position of an accepted token, None if rejected."""
        if token is None or token not in self.spec.tokens:
            return None
        return self.spec.tokens.index(token) + 1

    def create(self, body: object, raw_body: str, token_number: int) -> dict[str, Any]:
        """Create a job from a ``POST /jobs`` body and return the job object.

        Raises JobRequestError when the body does not validate.
        """
        request = validate_job_request(body, self.spec)
        configuration = request.configuration
        job_seconds = (
            configuration.job_seconds
            if configuration is not None
            else self.spec.job_seconds
        )
        with self._lock:
            now = self._clock()
            job = _Job(
                job_id=str(self._next_id),
                request=request,
                raw_body=raw_body,
                token_number=token_number,
                outcome=decide_outcome(request),
                created_at=now,
                job_seconds=job_seconds,
                exception_id=new_exception_id(),
            )
            self._next_id += 1
            self._jobs[job.job_id] = job
            return self._render_locked(job, now)

    def get(self, job_id: str) -> dict[str, Any]:
        """Return the job object or raise JobNotFoundError."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            return self._render_locked(job, self._clock())

    def kill(self, job_id: str) -> dict[str, Any]:
        """Request termination of a job and return the job object.

        A job that has not started ends ``cancelled`` at once. A processing job
        is ``terminating`` for half its ``job_seconds`` and then ``terminated``.
        Raises JobNotFoundError, or JobRequestError when the job is in another
        status than created, waiting or processing.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            now = self._clock()
            status = self._status_locked(job, now)
            if status not in KILLABLE_STATUSES:
                raise JobRequestError(
                    f'Job "{job_id}" is not in one of killable states '
                    f'({", ".join(KILLABLE_STATUSES)}); its status is "{status}".'
                )
            job.killed_at = now
            return self._render_locked(job, now)

    def search(self, query: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        """Return the jobs that ``GET /search/jobs`` with ``query`` lists.

        Jobs younger than ``search_lag_seconds`` are not indexed yet. Raises
        JobRequestError for an invalid query parameter.
        """
        with self._lock:
            now = self._clock()
            timelines = self._timelines_locked()
            indexed = [
                self._render_locked(job, now, timelines)
                for job in self._jobs.values()
                if now >= job.created_at + self.spec.search_lag_seconds
            ]
        return search_jobs(indexed, query)

    def records(self) -> list[dict[str, Any]]:
        """Return every created job with the request body exactly as received."""
        with self._lock:
            now = self._clock()
            timelines = self._timelines_locked()
            return [
                {
                    "id": job.job_id,
                    "raw_body": job.raw_body,
                    "body": job.request.body,
                    "outcome": {
                        "status": job.outcome.status,
                        "message": job.outcome.message,
                    },
                    "rendered_variables": dict(job.outcome.variables),
                    "job": self._render_locked(job, now, timelines),
                }
                for job in self._jobs.values()
            ]

    def _timelines_locked(self) -> dict[str, list[_Event]]:
        """Return the status events of every job, in creation order.

        A job's start depends on when the previous job of the same
        configuration ends, so all jobs are planned together.
        """
        lock_released_at: dict[tuple[str, str], float] = {}
        timelines: dict[str, list[_Event]] = {}
        for job in self._jobs.values():
            ready_at = job.created_at + job.job_seconds / 2
            lock_key = (
                (job.request.component, job.request.config_id)
                if job.request.config_id is not None
                else None
            )
            start_at = ready_at
            if lock_key is not None:
                start_at = max(ready_at, lock_released_at.get(lock_key, ready_at))
            events = [_Event(job.created_at, "created")]
            if start_at > ready_at:
                events.append(_Event(ready_at, "waiting"))
            events.append(_Event(start_at, "processing"))
            events.append(_Event(start_at + job.job_seconds / 2, job.outcome.status))
            if job.killed_at is not None:
                events = _apply_kill(events, job.killed_at, job.job_seconds / 2)
            processed = any(event.status == "processing" for event in events)
            if lock_key is not None and processed:
                lock_released_at[lock_key] = events[-1].time
            timelines[job.job_id] = events
        return timelines

    def _status_locked(self, job: _Job, now: float) -> str:
        events = self._timelines_locked()[job.job_id]
        return _current(events, now).status

    def _render_locked(
        self,
        job: _Job,
        now: float,
        timelines: dict[str, list[_Event]] | None = None,
    ) -> dict[str, Any]:
        if timelines is None:
            timelines = self._timelines_locked()
        events = timelines[job.job_id]
        current = _current(events, now)
        reached = [event for event in events if event.time <= now]
        start_time = next(
            (event.time for event in reached if event.status == "processing"), None
        )

        is_finished = current.status in FINAL_STATUSES
        end_time = current.time if is_finished else None
        duration = 0
        if start_time is not None:
            duration = int((end_time if end_time is not None else now) - start_time)

        desired_status = "terminating" if job.killed_at is not None else "processing"
        request = job.request
        body = request.body
        variable_values_data = body.get("variableValuesData")
        return {
            "id": job.job_id,
            "runId": job.job_id,
            "parentRunId": "",
            "project": {"id": "1", "name": "Simulator"},
            "token": {
                "id": str(job.token_number),
                "description": f"Simulator token {job.token_number}",
            },
            "status": current.status,
            "desiredStatus": desired_status,
            "mode": request.mode,
            "component": request.component,
            "config": request.config_id,
            "configData": _php_object(request.config_data),
            "configRowIds": body.get("configRowIds") or [],
            "tag": body.get("tag") or "1.0.0",
            "createdTime": _iso(job.created_at),
            "startTime": _iso(start_time) if start_time is not None else None,
            "endTime": _iso(end_time) if end_time is not None else None,
            "durationSeconds": duration,
            "result": _result(job, current.status),
            "usageData": [],
            "isFinished": is_finished,
            "url": f"{self.base_url}/jobs/{job.job_id}",
            "branchId": body.get("branchId"),
            "variableValuesId": request.variable_values_id,
            "variableValuesData": (
                variable_values_data
                if isinstance(variable_values_data, dict)
                else {"values": []}
            ),
            "backend": _php_object(body.get("backend")),
            "metrics": [],
            "behavior": {"onError": None},
            "parallelism": body.get("parallelism"),
            "type": "standard",
        }


def _apply_kill(events: list[_Event], killed_at: float, dwell: float) -> list[_Event]:
    """Return the events of a job that was killed at ``killed_at``."""
    before_kill = [event for event in events if event.time <= killed_at]
    if before_kill[-1].status == "processing":
        before_kill.append(_Event(killed_at, "terminating"))
        before_kill.append(_Event(killed_at + dwell, "terminated"))
    else:
        before_kill.append(_Event(killed_at, "cancelled"))
    return before_kill


def _current(events: list[_Event], now: float) -> _Event:
    current = events[0]
    for event in events:
        if event.time <= now:
            current = event
    return current


def _result(job: _Job, status: str) -> dict[str, Any] | list[Any]:
    if status == "success":
        return {"message": job.outcome.message}
    if status == "error":
        return {
            "message": job.outcome.message,
            "error": {"type": "user", "exceptionId": job.exception_id},
        }
    if status in ("cancelled", "terminated"):
        return {"message": "Job was terminated by the user."}
    return []


def _php_object(value: Any) -> Any:
    """Return ``[]`` for a missing or empty object, as Keboola's PHP API does."""
    if value is None or value == {}:
        return []
    return value


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
