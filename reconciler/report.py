"""The report of one cycle, for the command's output and the daemon's log."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.plan import Plan

if TYPE_CHECKING:
    from reconciler.spec import JobFile


@dataclass
class JobReport:
    """The outcome of one cycle for one job, for the command's output."""

    name: str
    status: str
    previous_status: str | None
    error: str | None
    messages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds one phase of a cycle took."""

    wall: float
    cpu: float


class PhaseClock:
    """Measures the phases of a cycle one after another."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def lap(self, phase: str, report: CycleReport) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        report.timings[phase] = Timing(wall - self._wall, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu


@dataclass
class CycleReport:
    """The outcome of one cycle."""

    plan: Plan
    dry_run: bool
    jobs: list[JobReport] = field(default_factory=list)
    invalid_files: list[JobFile] = field(default_factory=list)
    status_files_written: list[Path] = field(default_factory=list)
    status_file_errors: list[str] = field(default_factory=list)
    timings: dict[str, Timing] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as plain data, for ``tc apply -o json``."""
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "plan": [
                {
                    "action": c.action,
                    "job": c.name,
                    "details": list(c.details),
                    "invalid": c.invalid,
                }
                for c in self.plan.changes
            ],
            "prune_blocked": self.plan.prune_blocked,
            "invalid_files": [
                {"path": str(f.path), "error": str(f.error)} for f in self.invalid_files
            ],
            "jobs": [
                {
                    "job": j.name,
                    "status": j.status,
                    "previous_status": j.previous_status,
                    "error": j.error,
                    "messages": list(j.messages),
                }
                for j in self.jobs
            ],
            "status_files_written": [str(p) for p in self.status_files_written],
            "status_file_errors": list(self.status_file_errors),
            "timings": {
                phase: {"wall": t.wall, "cpu": t.cpu}
                for phase, t in self.timings.items()
            },
        }

    @property
    def ok(self) -> bool:
        """True when all files are valid, no job has an error, nothing was held back."""
        if self.plan.prune_blocked or self.invalid_files or self.status_file_errors:
            return False
        return all(j.error is None and j.status != "invalid" for j in self.jobs)
