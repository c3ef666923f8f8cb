"""Skip a cycle that would change nothing.

Some cycles end settled: every job is idle (see ``jobstate.is_idle``), the
job files on disk are the ones the cycle loaded, each valid and stored at the
revision of its bytes, and every status file matches the digest the database
recorded for it. Such a cycle records a fingerprint of what the next cycle
depends on: the bytes of the job directory's YAML files, the names of its other
entries, the settings, the tc version and the jobs table.

The next ``tc apply`` whose inputs have the same fingerprint would parse the
same files, poll and trigger nothing and write nothing, so it reports the
recorded state instead, without loading the rest of the reconciler. Any
difference gives another fingerprint and a full cycle: a file edited, added,
removed or left behind by a killed write, a status file changed by hand,
another setting, a ``tc rerun``, another version of tc.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.jobstate import is_idle
from reconciler.plan import Change, Plan
from reconciler.report import CycleReport, JobReport, Timing
from reconciler.settings import Settings
from reconciler.store import JobRow, Store

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Inputs:
    """The fingerprint of a cycle's inputs and the file hashes it was made of.

    Attributes:
        fingerprint: one SHA-256 over everything a settled cycle reads.
        file_hashes: the SHA-256 of each YAML file of the job directory, by
            file name.
    """

    fingerprint: str
    file_hashes: dict[str, str]


def read_inputs(
    job_dir: Path, settings: Settings, rows: Iterable[JobRow]
) -> Inputs | None:
    """Fingerprint what a cycle over ``job_dir`` would read.

    Returns None when the directory cannot be vouched for: it cannot be read,
    or it contains a symbolic link, whose target may change while the directory
    does not.
    """
    digest = hashlib.sha256()
    _feed(digest, __version__, str(job_dir.resolve()))
    _feed(digest, json.dumps(asdict(settings), sort_keys=True, default=_plain))
    hashes: dict[str, str] = {}
    try:
        entries = sorted(os.scandir(job_dir), key=lambda entry: entry.name)
        for entry in entries:
            if entry.is_symlink():
                return None
            if entry.is_file() and entry.name.lower().endswith(YAML_SUFFIXES):
                with open(entry.path, "rb") as handle:
                    hashes[entry.name] = hashlib.sha256(handle.read()).hexdigest()
                _feed(digest, "file", entry.name, hashes[entry.name])
            else:
                kind = "directory" if entry.is_dir() else "other"
                _feed(digest, kind, entry.name)
    except OSError:
        return None
    for row in rows:
        _feed(digest, repr(row))
    return Inputs(digest.hexdigest(), hashes)


def settled_report(
    job_dir: Path, settings: Settings, store: Store
) -> CycleReport | None:
    """Return the report of a cycle that would change nothing, or None.

    None means a full cycle must run: nothing was recorded, or the inputs
    differ from the recorded ones.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    recorded = store.settled_fingerprint()
    if recorded is None:
        return None
    rows = store.jobs()
    inputs = read_inputs(job_dir, settings, rows.values())
    if inputs is None or inputs.fingerprint != recorded:
        return None
    report = CycleReport(
        plan=Plan(tuple(Change("noop", name) for name in rows)),
        dry_run=False,
        jobs=[
            JobReport(name, row.status, row.status, row.error_message)
            for name, row in rows.items()
        ],
    )
    report.timings["settled"] = Timing(
        time.perf_counter() - wall, time.process_time() - cpu
    )
    return report


def record(
    store: Store,
    job_dir: Path,
    settings: Settings,
    report: CycleReport,
    files: Mapping[str, tuple[Path, Path]],
) -> bool:
    """Record the fingerprint of a finished cycle if the next one could be skipped.

    Args:
        store: the state database.
        job_dir: the cycle's job directory.
        settings: the cycle's settings.
        report: what the cycle did.
        files: the job file and status file of each job the cycle loaded,
            by job name.

    Returns:
        True when a fingerprint was recorded; otherwise any recorded one is
        cleared.
    """
    fingerprint = None
    clean = not (
        report.invalid_files or report.plan.prune_blocked or report.status_file_errors
    )
    # Rows, batches and triggers are read in the write transaction that
    # records the result, so no other process can change them in between.
    with store.transaction():
        if clean:
            fingerprint = _settled_fingerprint(store, job_dir, settings, files)
        store.set_settled_fingerprint(fingerprint)
    return fingerprint is not None


def _settled_fingerprint(
    store: Store,
    job_dir: Path,
    settings: Settings,
    files: Mapping[str, tuple[Path, Path]],
) -> str | None:
    """Return the fingerprint of the inputs if every job is settled, else None."""
    rows = store.jobs()
    if not _all_idle(store, rows, files):
        return None
    inputs = read_inputs(job_dir, settings, rows.values())
    if inputs is None or not _match_files(rows, files, inputs):
        return None
    return inputs.fingerprint


def _all_idle(
    store: Store, rows: Mapping[str, JobRow], files: Mapping[str, tuple[Path, Path]]
) -> bool:
    if set(rows) != set(files):
        return False
    # An idle job has no next check, so this test spares reading batches
    # and triggers after most cycles of a busy daemon.
    if any(row.next_check_at is not None for row in rows.values()):
        return False
    batches = store.all_batches()
    triggers = store.current_triggers()
    return all(
        is_idle(row.status, batches.get(name, []), triggers.get(name))
        for name, row in rows.items()
    )


def _match_files(
    rows: Mapping[str, JobRow],
    files: Mapping[str, tuple[Path, Path]],
    inputs: Inputs,
) -> bool:
    """Tell whether the job files on disk are the loaded ones, matching their rows.

    A job file added while the cycle ran was not loaded, so the cycle's
    outcome does not cover it and must not be recorded for its bytes.
    """
    # The cycle that records has imported the loader already.
    from reconciler.spec import is_job_file_name

    on_disk = {name for name in inputs.file_hashes if is_job_file_name(name)}
    if on_disk != {job_path.name for job_path, _ in files.values()}:
        return False
    for name, row in rows.items():
        job_path, status_path = files[name]
        job_hash = inputs.file_hashes.get(job_path.name)
        status_hash = inputs.file_hashes.get(status_path.name)
        if job_hash is None or status_hash is None or row.status_digest is None:
            return False
        if row.file_error is not None or row.path != str(job_path):
            return False
        if not job_hash[:12] == row.revision == row.spec_revision:
            return False
        if row.status_digest.rpartition(":")[2] != status_hash:
            return False
    return True


def _feed(digest: Any, *parts: str) -> None:
    # Each part is preceded by its length, so that no two different lists of
    # parts feed the same bytes.
    for part in parts:
        data = part.encode("utf-8", "surrogateescape")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)
