"""Simulated OpenAI batches: timelines, Batch objects, listing and cancel.

A batch's timeline starts at the first request that returns it (retrieve,
list or cancel), so its progress does not depend on when the server started.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.simulator.batch_specs import (
    DEFAULT_ERRORS,
    TERMINAL_STATUSES,
    BatchSpec,
    BatchStep,
    RequestCounts,
    Unset,
)

# Batch fields that store the time a status was entered.
_TIMESTAMP_FIELDS = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}

# Real batches expire 24 hours after creation.
_COMPLETION_WINDOW_SECONDS = 86400

# Simulated token usage per completed request.
_INPUT_TOKENS_PER_REQUEST = 100
_OUTPUT_TOKENS_PER_REQUEST = 20


class BatchCancelError(Exception):
    """A cancel request for a batch that is already in a terminal status."""

    def __init__(self, batch_id: str, status: str) -> None:
        super().__init__(f"Cannot cancel a batch with status '{status}'.")
        self.batch_id = batch_id
        self.status = status


@dataclass
class _BatchState:
    spec: BatchSpec
    sequence: int
    steps: tuple[BatchStep, ...]
    started_at: float | None = None
    # Counts when a cancel was requested. They hold for cancelling and cancelled.
    cancel_counts: RequestCounts | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class _Position:
    index: int
    entered_at: float


class BatchStore:
    """Thread-safe set of simulated batches, read through Batch API objects."""

    def __init__(
        self, specs: Mapping[str, BatchSpec], clock: Callable[[], float]
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, _BatchState] = {}
        self._next_sequence = 0
        # Newest-first order and positions, kept while every batch has started
        # (then the order cannot change), so that paging through tens of
        # thousands of batches does not sort them for every page.
        self._order: tuple[list[_BatchState], dict[str, int]] | None = None
        self.put(specs)

    def put(self, specs: Mapping[str, BatchSpec]) -> None:
        """Add batches or replace them. A replaced batch restarts its timeline."""
        with self._lock:
            for batch_id, spec in specs.items():
                self._states[batch_id] = _BatchState(
                    spec=spec,
                    sequence=self._next_sequence,
                    steps=spec.steps,
                    started_at=spec.created_at,
                )
                self._next_sequence += 1
            self._order = None

    def ids(self) -> list[str]:
        """Return the ids of all batches in the order they were added."""
        with self._lock:
            return list(self._states)

    def retrieve(self, batch_id: str) -> dict[str, Any] | None:
        """Return the Batch object, or None for an unknown id."""
        with self._lock:
            state = self._states.get(batch_id)
        if state is None:
            return None
        return self._render(state, self._clock())

    def list_page(self, limit: int, after: str | None) -> dict[str, Any]:
        """Return one page of the list endpoint, newest batch first.

        ``after`` is the id of the last batch of the previous page. An unknown
        ``after`` id returns an empty page.
        """
        now = self._clock()
        ordered, positions = self._newest_first(now)
        start = 0
        if after is not None:
            start = positions[after] + 1 if after in positions else len(ordered)
        remaining = len(ordered) - start
        page = [self._render(state, now) for state in ordered[start : start + limit]]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": remaining > limit,
        }

    def _newest_first(self, now: float) -> tuple[list[_BatchState], dict[str, int]]:
        with self._lock:
            if self._order is not None:
                return self._order
            states = list(self._states.values())
        # A batch not read yet would start now, so it sorts as the newest.
        states.sort(
            key=lambda s: (
                int(s.started_at if s.started_at is not None else now),
                s.sequence,
            ),
            reverse=True,
        )
        positions = {state.spec.batch_id: i for i, state in enumerate(states)}
        with self._lock:
            if all(s.started_at is not None for s in states):
                self._order = (states, positions)
        return states, positions

    def cancel(self, batch_id: str) -> dict[str, Any] | None:
        """Request cancellation and return the Batch object, None if unknown.

        A non-terminal batch moves to ``cancelling`` now and to ``cancelled``
        after the spec's ``cancel_seconds``. Raises BatchCancelError for a
        terminal batch.
        """
        with self._lock:
            state = self._states.get(batch_id)
        if state is None:
            return None
        now = self._clock()
        with state.lock:
            self._start(state, now)
            position = self._position(state, now)
            step = state.steps[position.index]
            if step.status in TERMINAL_STATUSES:
                raise BatchCancelError(batch_id, step.status)
            if step.status != "cancelling":
                state.cancel_counts = self._counts(state, position, now)
                state.steps = (
                    *state.steps[: position.index],
                    BatchStep(step.status, now - position.entered_at),
                    BatchStep("cancelling", state.spec.cancel_seconds),
                    BatchStep("cancelled", None),
                )
        return self._render(state, now)

    def _start(self, state: _BatchState, now: float) -> None:
        if state.started_at is None:
            state.started_at = now

    def _position(self, state: _BatchState, now: float) -> _Position:
        assert state.started_at is not None
        entered_at = state.started_at
        for index, step in enumerate(state.steps):
            if step.seconds is None or now < entered_at + step.seconds:
                return _Position(index, entered_at)
            entered_at += step.seconds
        raise AssertionError("a batch script always ends with a terminal step")

    def _counts(
        self, state: _BatchState, position: _Position, now: float
    ) -> RequestCounts | None:
        final = state.cancel_counts or state.spec.request_counts
        if final is None:
            return None
        step = state.steps[position.index]
        if step.status == "validating":
            return RequestCounts(0, 0, 0)
        if step.status == "in_progress":
            # Counts grow linearly from zero to the final counts over the step.
            seconds = step.seconds or 0.0
            elapsed = now - position.entered_at
            share = min(1.0, elapsed / seconds) if seconds > 0 else 1.0
            return RequestCounts(
                total=final.total,
                completed=math.floor(final.completed * share),
                failed=math.floor(final.failed * share),
            )
        return final

    def _render(self, state: _BatchState, now: float) -> dict[str, Any]:
        with state.lock:
            self._start(state, now)
            position = self._position(state, now)
            steps = state.steps
            started_at = state.started_at
            counts = self._counts(state, position, now)
        assert started_at is not None
        spec = state.spec
        status = steps[position.index].status
        created_at = int(started_at)
        batch: dict[str, Any] = {
            "id": spec.batch_id,
            "object": "batch",
            "endpoint": spec.endpoint,
            "errors": _errors(spec, status),
            "input_file_id": spec.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": None,
            "error_file_id": None,
            "created_at": created_at,
            "in_progress_at": None,
            "expires_at": created_at + _COMPLETION_WINDOW_SECONDS,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": counts.as_json() if counts is not None else None,
            "metadata": dict(spec.metadata) if spec.metadata is not None else None,
            "usage": _usage(counts),
        }
        if spec.model is not None:
            batch["model"] = spec.model
        entered_at = started_at
        for step in steps[: position.index + 1]:
            timestamp_field = _TIMESTAMP_FIELDS.get(step.status)
            # A status entered twice keeps the time it was first entered.
            if timestamp_field is not None and batch[timestamp_field] is None:
                batch[timestamp_field] = int(entered_at)
            entered_at += step.seconds or 0.0
        if status in TERMINAL_STATUSES:
            batch["output_file_id"], batch["error_file_id"] = _file_ids(
                spec, status, counts
            )
        return batch


def _file_ids(
    spec: BatchSpec, status: str, counts: RequestCounts | None
) -> tuple[str | None, str | None]:
    """Return the output and error file ids of a batch in a terminal status.

    Without explicit ids, a batch that failed validation has no files, the
    output file exists when a request completed, and the error file exists when
    a request failed or the batch expired.
    """
    suffix = spec.batch_id.removeprefix("batch_")
    ran = status != "failed"
    any_completed = counts is None or counts.completed > 0
    any_failed = counts is not None and counts.failed > 0
    output_file_id: str | None = None
    if ran and any_completed:
        output_file_id = f"file-out-{suffix}"
    error_file_id: str | None = None
    if ran and (any_failed or status == "expired"):
        error_file_id = f"file-err-{suffix}"
    if not isinstance(spec.output_file_id, Unset):
        output_file_id = spec.output_file_id
    if not isinstance(spec.error_file_id, Unset):
        error_file_id = spec.error_file_id
    return output_file_id, error_file_id


def _errors(spec: BatchSpec, status: str) -> dict[str, Any] | None:
    """Return the ``errors`` field: set for a failed batch, else as configured.

    Configured errors appear once the batch is terminal, default errors only
    when it failed.
    """
    if status not in TERMINAL_STATUSES:
        return None
    errors = spec.errors
    if errors is None and status == "failed":
        errors = DEFAULT_ERRORS
    if errors is None:
        return None
    return {"object": "list", "data": [dict(error) for error in errors]}


def _usage(counts: RequestCounts | None) -> dict[str, Any]:
    completed = counts.completed if counts is not None else 0
    input_tokens = completed * _INPUT_TOKENS_PER_REQUEST
    output_tokens = completed * _OUTPUT_TOKENS_PER_REQUEST
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
