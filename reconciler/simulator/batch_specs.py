"""Scripted OpenAI batches: presets, explicit scripts and their field defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.simulator.validation import (
    Fields,
    ScenarioError,
    require_list,
    require_mapping,
)

BATCH_STATUSES = frozenset(
    {
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
    }
)
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})

PRESET_STATUSES: dict[str, tuple[str, ...]] = {
    "completes": ("validating", "in_progress", "finalizing", "completed"),
    "fails": ("validating", "failed"),
    "expires": ("validating", "in_progress", "expired"),
    "cancels": ("validating", "in_progress", "cancelling", "cancelled"),
}

# Final request counts of a preset when the scenario gives none. A batch that
# fails validation runs no request, and the partial presets stop part way.
PRESET_COUNTS: dict[str, tuple[int, int, int]] = {
    "completes": (10, 10, 0),
    "fails": (0, 0, 0),
    "expires": (10, 6, 0),
    "cancels": (10, 3, 0),
}

DEFAULT_ERRORS: tuple[dict[str, Any], ...] = (
    {
        "code": "invalid_json_line",
        "message": "This line is not parseable as valid JSON.",
        "param": None,
        "line": 1,
    },
)

_BATCH_KEYS = (
    "preset",
    "script",
    "step_seconds",
    "cancel_seconds",
    "request_counts",
    "output_file_id",
    "error_file_id",
    "input_file_id",
    "endpoint",
    "model",
    "metadata",
    "errors",
    "created_at",
)


class Unset:
    """Type of ``UNSET``, the marker for a field that the scenario leaves out."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True)
class BatchStep:
    """One status of a batch script and how long the batch stays in it.

    ``seconds`` is None for the terminal status, which is always the last step.
    """

    status: str
    seconds: float | None


@dataclass(frozen=True)
class RequestCounts:
    """Request counts of a batch, as in the ``request_counts`` field."""

    total: int
    completed: int
    failed: int

    def as_json(self) -> dict[str, int]:
        """Return the counts as the Batch API's ``request_counts`` object."""
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


@dataclass(frozen=True)
class BatchSpec:
    """How one simulated batch behaves once its timeline has started.

    ``request_counts`` contains the final counts and is None when the scenario asks
    for a null ``request_counts`` field. A file id field is ``UNSET`` when the
    default applies, which depends on the terminal status and the counts.
    """

    batch_id: str
    steps: tuple[BatchStep, ...]
    request_counts: RequestCounts | None
    output_file_id: str | None | Unset
    error_file_id: str | None | Unset
    input_file_id: str
    endpoint: str | None
    model: str | None
    metadata: dict[str, str] | None
    errors: tuple[dict[str, Any], ...] | None
    cancel_seconds: float
    # Unix time the timeline starts at; None starts it at the first read.
    created_at: float | None = None


def parse_batch_specs(data: object, where: str) -> dict[str, BatchSpec]:
    """Parse a mapping of batch id to batch settings into batch specs."""
    mapping = require_mapping(data, where)
    specs: dict[str, BatchSpec] = {}
    for batch_id, settings in mapping.items():
        if not batch_id or "/" in batch_id:
            raise ScenarioError(
                f"{where}: batch id {batch_id!r} must be non-empty and contain no '/'"
            )
        specs[batch_id] = parse_batch_spec(batch_id, settings, f"{where}.{batch_id}")
    return specs


def parse_batch_spec(batch_id: str, data: object, where: str) -> BatchSpec:
    """Parse the settings of one batch, filling defaults from its preset."""
    fields = Fields(data, where)
    fields.reject_unknown(_BATCH_KEYS)
    preset = fields.optional_str("preset")
    if fields.has("script") == (preset is not None):
        raise ScenarioError(f"{where}: set exactly one of 'preset' and 'script'")
    if preset is not None:
        if preset not in PRESET_STATUSES:
            raise ScenarioError(
                f"{fields.path('preset')}: unknown preset {preset!r}; "
                f"expected one of {', '.join(PRESET_STATUSES)}"
            )
        step_seconds = fields.optional_number("step_seconds", 1.0)
        steps = _preset_steps(preset, step_seconds)
        default_counts = RequestCounts(*PRESET_COUNTS[preset])
    else:
        if fields.has("step_seconds"):
            raise ScenarioError(
                f"{fields.path('step_seconds')}: applies to presets only; "
                "give each script step its own 'seconds'"
            )
        steps = _parse_script(fields.data["script"], fields.path("script"))
        step_seconds = 1.0
        default_counts = _script_default_counts(steps[-1].status)
    suffix = batch_id.removeprefix("batch_")
    return BatchSpec(
        batch_id=batch_id,
        steps=steps,
        request_counts=_parse_counts(fields, default_counts),
        output_file_id=_optional_file_id(fields, "output_file_id"),
        error_file_id=_optional_file_id(fields, "error_file_id"),
        input_file_id=fields.optional_str("input_file_id") or f"file-in-{suffix}",
        endpoint=fields.optional_str("endpoint", "/v1/chat/completions"),
        model=fields.optional_str("model", "gpt-4o-mini-2024-07-18"),
        metadata=fields.str_mapping("metadata"),
        errors=_parse_errors(fields),
        cancel_seconds=fields.optional_number("cancel_seconds", step_seconds),
        created_at=(
            fields.optional_number("created_at", 0.0)
            if fields.has("created_at")
            else None
        ),
    )


def _preset_steps(preset: str, step_seconds: float) -> tuple[BatchStep, ...]:
    statuses = PRESET_STATUSES[preset]
    steps = [BatchStep(status, step_seconds) for status in statuses[:-1]]
    steps.append(BatchStep(statuses[-1], None))
    return tuple(steps)


def _parse_script(data: object, where: str) -> tuple[BatchStep, ...]:
    items = require_list(data, where)
    if not items:
        raise ScenarioError(f"{where}: must contain at least one step")
    steps: list[BatchStep] = []
    for index, item in enumerate(items):
        step_where = f"{where}[{index}]"
        fields = Fields(item, step_where)
        fields.reject_unknown(("status", "seconds"))
        status = fields.required_str("status")
        if status not in BATCH_STATUSES:
            raise ScenarioError(
                f"{fields.path('status')}: unknown status {status!r}; expected one "
                f"of {', '.join(sorted(BATCH_STATUSES))} (use a 'status_value' "
                "fault for other values)"
            )
        is_last = index == len(items) - 1
        if status in TERMINAL_STATUSES:
            if not is_last:
                raise ScenarioError(
                    f"{step_where}: terminal status {status!r} must be the last step"
                )
            steps.append(BatchStep(status, None))
            continue
        if is_last:
            raise ScenarioError(
                f"{step_where}: the last step must have a terminal status "
                f"({', '.join(sorted(TERMINAL_STATUSES))})"
            )
        if not fields.has("seconds"):
            raise ScenarioError(f"{fields.path('seconds')}: missing required field")
        steps.append(BatchStep(status, fields.optional_number("seconds", 0.0)))
    return tuple(steps)


def _script_default_counts(terminal_status: str) -> RequestCounts:
    if terminal_status == "failed":
        return RequestCounts(0, 0, 0)
    return RequestCounts(10, 10, 0)


def _parse_counts(fields: Fields, default: RequestCounts) -> RequestCounts | None:
    if not fields.has("request_counts"):
        return default
    if fields.data["request_counts"] is None:
        return None
    counts = Fields(fields.data["request_counts"], fields.path("request_counts"))
    counts.reject_unknown(("total", "completed", "failed"))
    completed = counts.optional_int("completed", 0)
    failed = counts.optional_int("failed", 0)
    total = counts.optional_int("total", completed + failed)
    if completed + failed > total:
        raise ScenarioError(
            f"{fields.path('request_counts')}: completed + failed "
            f"({completed + failed}) exceeds total ({total})"
        )
    return RequestCounts(total, completed, failed)


def _optional_file_id(fields: Fields, key: str) -> str | None | Unset:
    if not fields.has(key):
        return UNSET
    return fields.optional_str(key)


def _parse_errors(fields: Fields) -> tuple[dict[str, Any], ...] | None:
    if not fields.has("errors"):
        return None
    items = require_list(fields.data["errors"], fields.path("errors"))
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        error = Fields(item, f"{fields.path('errors')}[{index}]")
        error.reject_unknown(("code", "message", "param", "line"))
        line = error.data.get("line")
        if line is not None and (isinstance(line, bool) or not isinstance(line, int)):
            raise ScenarioError(f"{error.path('line')}: expected an integer or null")
        errors.append(
            {
                "code": error.optional_str("code"),
                "message": error.optional_str("message"),
                "param": error.optional_str("param"),
                "line": line,
            }
        )
    return tuple(errors)
