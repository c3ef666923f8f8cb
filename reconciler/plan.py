"""The diff between the declared jobs and the state database.

The plan is computed from job files and stored rows only; it reads nothing
else and writes nothing, so ``tc diff`` and ``tc apply --dry-run`` can show it
without side effects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from reconciler.spec import JobFile
    from reconciler.store import JobRow

Action = Literal["create", "update", "delete", "noop"]


@dataclass(frozen=True)
class Change:
    """The planned change to one job.

    Attributes:
        action: ``create``, ``update``, ``delete`` or ``noop``.
        name: the job name.
        details: one line per changed field, for people.
        invalid: the job file does not validate (its last valid spec stays).
    """

    action: Action
    name: str
    details: tuple[str, ...] = ()
    invalid: bool = False


@dataclass(frozen=True)
class Plan:
    """The changes of one cycle, and whether pruning was held back."""

    changes: tuple[Change, ...]
    prune_blocked: bool = False
    held_back: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_changes(self) -> bool:
        """True when applying the plan would change the state database."""
        return any(c.action != "noop" for c in self.changes)

    def of(self, action: Action) -> list[Change]:
        """Return the changes with the given action."""
        return [c for c in self.changes if c.action == action]


def make_plan(
    files: Iterable[JobFile],
    stored: dict[str, JobRow],
    *,
    allow_empty: bool = False,
) -> Plan:
    """Diff job files against stored jobs.

    A job whose file is invalid is never deleted: it is an update that marks
    it invalid, and its last valid spec stays in force. When no job files are
    found while jobs are stored (an empty checkout, an unmounted volume), no
    job is deleted unless ``allow_empty`` is set.
    """
    declared = {f.name: f for f in files}
    changes: list[Change] = []
    for name, job_file in sorted(declared.items()):
        row = stored.get(name)
        invalid = job_file.error is not None
        if row is None:
            changes.append(Change("create", name, _created(job_file), invalid))
            continue
        details = _updated(job_file, row)
        action: Action = "update" if details else "noop"
        changes.append(Change(action, name, details, invalid))

    gone = sorted(set(stored) - set(declared))
    blocked = bool(gone) and not declared and not allow_empty
    if not blocked:
        changes.extend(Change("delete", name) for name in gone)
    changes.sort(key=lambda c: c.name)
    return Plan(
        tuple(changes), prune_blocked=blocked, held_back=tuple(gone if blocked else ())
    )


def _created(job_file: JobFile) -> tuple[str, ...]:
    if job_file.spec is None:
        return ("file is invalid",)
    count = len(job_file.spec.batch_ids)
    return (f"{count} batch{'es' if count != 1 else ''}",)


def _updated(job_file: JobFile, row: JobRow) -> tuple[str, ...]:
    current_error = str(job_file.error) if job_file.error else None
    if job_file.revision == row.revision and current_error == row.file_error:
        return ()
    if job_file.spec is None:
        return ("file is invalid; the last valid spec stays in force",)
    details: list[str] = []
    if row.file_error is not None:
        details.append("file is valid again")
    old = row.spec or {}
    new = job_file.spec.model_dump(mode="json")
    details.extend(_field_changes(old, new))
    if not details:
        details.append("file changed (formatting or comments only)")
    return tuple(details)


def _field_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    old_ids = list(old.get("batch_ids") or [])
    new_ids = list(new.get("batch_ids") or [])
    added = [b for b in new_ids if b not in old_ids]
    removed = [b for b in old_ids if b not in new_ids]
    if added or removed:
        parts = [f"+{b}" for b in added] + [f"-{b}" for b in removed]
        lines.append("batch_ids: " + " ".join(parts))
    elif old_ids != new_ids:
        lines.append("batch_ids: reordered")
    for key, value in _flatten(new).items():
        if key == "batch_ids":
            continue
        before = _flatten(old).get(key)
        if before != value:
            lines.append(f"{key}: {_show(before)} -> {_show(value)}")
    return lines


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(value: Any) -> str:
    return "(unset)" if value is None else repr(value)
