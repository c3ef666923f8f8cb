"""Import of an original TeckoChecker database into job files and the state database.

Each imported job becomes ``OUT/SLUG.yaml``, named by a slug of the original
name that is unique within the import, with the original name kept as
``description``. An existing file is never overwritten. The state database is
seeded with what the original already knew, so that the first ``tc apply``
neither waits for batches that finished nor triggers Keboola a second time:

- terminal batch statuses are carried over. Only the multi-batch schema
  records them per batch. The single-batch original triggered Keboola only
  for a completed batch, so the batch of a ``completed`` job is ``completed``;
- a ``completed`` or ``completed_with_failures`` job gets an ``accepted``
  trigger, because the original sent it;
- a ``failed`` job gets a ``rejected`` trigger, so that nothing is sent until
  ``tc rerun``, as after a trigger that Keboola rejected.

Reading the original database is ``reconciler.original_db``'s part.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.catalog import check_settings
from reconciler.errors import HostNotAllowedError, SecretError
from reconciler.hosts import queue_url_for
from reconciler.jobstate import derive_status
from reconciler.original_db import (
    OriginalDatabase,
    OriginalJob,
    OriginalSecret,
    Schema,
    original_key,
    read_original,
)
from reconciler.secrets import SecretVault
from reconciler.settings import Settings
from reconciler.spec import JobSpec, load_job_file
from reconciler.statuses import TERMINAL_STATUSES
from reconciler.store import Store
from reconciler.timeutil import to_iso, utc_now
from reconciler.trigger import build_variables, new_trigger_id

log = logging.getLogger(__name__)

UNFINISHED_STATUSES = ("active", "paused")
FINISHED_STATUSES = ("completed", "completed_with_failures", "failed")
MAX_SLUG_LENGTH = 60
# The variables the original sent; a seeded trigger records these only.
ORIGINAL_VARIABLES = (
    "batch_ids_completed",
    "batch_ids_failed",
    "batch_count_total",
    "batch_count_completed",
    "batch_count_failed",
)

# ----------------------------------------------------------------------------
# Names


def slugify(text: str, fallback: str) -> str:
    """Return a job or secret name made of ``text``: ``a-z``, ``0-9`` and ``-``."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    slug = slug[:MAX_SLUG_LENGTH].rstrip("-")
    return slug or fallback


def unique_slugs(items: list[tuple[int, str]], prefix: str) -> dict[int, str]:
    """Return a slug per id, unique among ``items``; ids in order get the plain slug.

    Assigning in id order keeps the names stable when the import runs again.
    """
    used: set[str] = set()
    result: dict[int, str] = {}
    for item_id, name in sorted(items):
        base = slugify(name, f"{prefix}-{item_id}")
        slug, number = base, 2
        while slug in used:
            slug = f"{base}-{number}"
            number += 1
        used.add(slug)
        result[item_id] = slug
    return result


# ----------------------------------------------------------------------------
# The import


@dataclass(frozen=True)
class ImportOptions:
    """The options of an import, as ``tc import-teckochecker`` takes them.

    Attributes:
        out_dir: directory that the job files are written to.
        secret_key: the original's ``SECRET_KEY``; None stores no values.
        include_finished: also import completed and failed jobs (``--all``).
        dry_run: write nothing, only report.
        openai_base_url: ``openai.base_url`` for every job file; None leaves
            the default, ``https://api.openai.com/v1``, as the original used.
    """

    out_dir: Path = Path("jobs.d")
    secret_key: str | None = field(default=None, repr=False)
    include_finished: bool = False
    dry_run: bool = False
    openai_base_url: str | None = None


@dataclass(frozen=True)
class ImportedJob:
    """A job that was imported, or would be in a dry run.

    ``trigger`` is the seeded trigger state (``accepted`` or ``rejected``),
    None when the job has yet to trigger. ``text`` is the job file's content.
    """

    name: str
    path: Path
    original_id: int
    original_name: str
    original_status: str
    batch_count: int
    terminal_count: int
    trigger: str | None
    text: str


@dataclass(frozen=True)
class ImportedSecret:
    """A secret that imported jobs refer to.

    ``stored`` is True when this import stored its value, ``in_store`` when
    the secret store has a value for it afterwards, stored now or before.
    """

    name: str
    original_id: int
    original_name: str
    type: str | None
    stored: bool
    in_store: bool = False


@dataclass(frozen=True)
class Skipped:
    """Something not imported. ``problem`` is False for an expected skip."""

    what: str
    reason: str
    problem: bool = True


@dataclass
class ImportReport:
    """The outcome of an import, or of a dry run."""

    source: Path
    schema: Schema
    out_dir: Path
    dry_run: bool
    jobs: list[ImportedJob] = field(default_factory=list)
    secrets: list[ImportedSecret] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def batch_count(self) -> int:
        """Number of batches of the imported jobs."""
        return sum(job.batch_count for job in self.jobs)

    @property
    def ok(self) -> bool:
        """True when nothing was skipped for a problem."""
        return not any(s.problem for s in self.skipped)


@dataclass
class _Planned:
    """A job ready to be written: its file, spec and the state to seed."""

    original: OriginalJob
    name: str
    path: Path
    text: str
    revision: str
    spec: JobSpec
    secret_ids: tuple[int, int]
    terminal: dict[str, tuple[str, str | None]]
    trigger: str | None


def import_database(
    source: Path, settings: Settings, options: ImportOptions
) -> ImportReport:
    """Turn the jobs of an original TeckoChecker database into job files.

    Args:
        source: the original's SQLite file, opened read-only.
        settings: the operator's settings; the state directory is seeded.
        options: what to import and where.

    Raises:
        ImportSourceError: the original database cannot be read.
        SecretError: ``options.secret_key`` does not decrypt a secret that an
            imported job refers to; nothing is written then.
        StoreError: the state database cannot be opened or written.
    """
    original = read_original(source)
    report = ImportReport(source, original.schema, options.out_dir, options.dry_run)
    job_names = unique_slugs([(j.id, j.name) for j in original.jobs], "job")
    secret_names = unique_slugs(
        [(s.id, s.name) for s in original.secrets.values()], "secret"
    )
    planned: list[_Planned] = []
    with tempfile.TemporaryDirectory(prefix="tc-import-") as scratch:
        for job in original.jobs:
            outcome = _plan_job(
                job,
                job_names[job.id],
                secret_names,
                original,
                settings,
                options,
                Path(scratch),
                report,
            )
            if isinstance(outcome, Skipped):
                report.skipped.append(outcome)
            else:
                planned.append(outcome)

    used = sorted({i for p in planned for i in p.secret_ids})
    values = _decrypt(original, used, options.secret_key)
    if options.dry_run:
        _report_dry_run(report, planned, original, secret_names, used, values)
        return report
    store = Store.open(settings.state_dir)
    try:
        _store_secrets(report, store, original, secret_names, used, values)
        options.out_dir.mkdir(parents=True, exist_ok=True)
        for plan in planned:
            _write_job(report, store, plan, source)
    finally:
        store.close()
    _note_unused_secrets(report, original, used)
    return report


def _plan_job(
    job: OriginalJob,
    name: str,
    secret_names: dict[int, str],
    original: OriginalDatabase,
    settings: Settings,
    options: ImportOptions,
    scratch: Path,
    report: ImportReport,
) -> _Planned | Skipped:
    what = f"job {job.id} {job.name!r}"
    if job.status in FINISHED_STATUSES and not options.include_finished:
        reason = f"finished ({job.status}); pass --all to import finished jobs"
        return Skipped(what, reason, problem=False)
    if job.status not in UNFINISHED_STATUSES + FINISHED_STATUSES:
        return Skipped(what, f"has the unknown status {job.status!r}")
    if not job.batches:
        return Skipped(what, "has no batch ids")
    secret_ids = []
    for column, secret_id in (
        ("OpenAI", job.openai_secret_id),
        ("Keboola", job.keboola_secret_id),
    ):
        if secret_id is None or secret_id not in original.secrets:
            return Skipped(what, f"has no {column} secret (the original deleted it)")
        secret_ids.append(secret_id)
    path = options.out_dir / f"{name}.yaml"
    for existing in (path, path.with_suffix(".yml")):
        if existing.exists():
            reason = (
                f"{existing} exists and is never overwritten; if it is another "
                "job, move it aside and import again"
            )
            return Skipped(what, reason, problem=False)

    document = _document(
        job, secret_names[secret_ids[0]], secret_names[secret_ids[1]], options
    )
    text = _header(job, original.path) + yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    probe = scratch / path.name
    probe.write_text(text, encoding="utf-8")
    loaded = load_job_file(probe, max_batch_ids=settings.max_batch_ids)
    if loaded.spec is None:
        assert loaded.error is not None
        problems = "; ".join(
            f"{p.field}: {p.message}" if p.field else p.message
            for p in loaded.error.problems
        )
        return Skipped(what, f"does not make a valid job file: {problems}")
    checked = check_settings(loaded, settings)
    if checked.error is not None:
        report.warnings.append(
            f"{path}: {'; '.join(p.message for p in checked.error.problems)}"
        )
    return _Planned(
        original=job,
        name=name,
        path=path,
        text=text,
        revision=loaded.revision,
        spec=loaded.spec,
        secret_ids=(secret_ids[0], secret_ids[1]),
        terminal={
            b.batch_id: (b.status, b.completed_at)
            for b in job.batches
            if b.status in TERMINAL_STATUSES
        },
        trigger=_seeded_trigger(job, report),
    )


def _seeded_trigger(job: OriginalJob, report: ImportReport) -> str | None:
    if job.status in ("completed", "completed_with_failures"):
        return "accepted"
    if job.status == "failed":
        return "rejected"
    terminal = [b for b in job.batches if b.status in TERMINAL_STATUSES]
    if job.status == "active" and len(terminal) == len(job.batches):
        report.warnings.append(
            f"job {job.id} {job.name!r}: every batch is terminal but the original "
            "still had the job active, so it may have triggered Keboola before "
            "it stopped; the next `tc apply` triggers it (check Keboola's jobs "
            "first, and set suspend: true to hold it)"
        )
    return None


def _document(
    job: OriginalJob, openai_secret: str, keboola_secret: str, options: ImportOptions
) -> dict[str, Any]:
    openai: dict[str, Any] = {"api_key": f"secret:{openai_secret}"}
    if options.openai_base_url:
        openai["base_url"] = options.openai_base_url
    keboola: dict[str, Any] = {"stack_url": job.stack_url}
    queue_url = _original_queue_url(job.stack_url)
    if queue_url != _derived_queue_url(job.stack_url):
        keboola["queue_url"] = queue_url
    keboola["token"] = f"secret:{keboola_secret}"
    keboola["component_id"] = job.component_id
    keboola["configuration_id"] = job.configuration_id
    document: dict[str, Any] = {"version": 1}
    if job.name.strip():
        document["description"] = job.name
    document["batch_ids"] = [b.batch_id for b in job.batches]
    document["openai"] = openai
    document["keboola"] = keboola
    if job.poll_interval_seconds is not None:
        document["poll_interval_seconds"] = job.poll_interval_seconds
    if job.status == "paused":
        document["suspend"] = True
    return document


def _original_queue_url(stack_url: str) -> str:
    """Return the queue URL as the original derived it: a plain text replace."""
    return stack_url.replace("connection", "queue").rstrip("/")


def _derived_queue_url(stack_url: str) -> str | None:
    try:
        return queue_url_for(stack_url, None)
    except HostNotAllowedError:
        return None


def _header(job: OriginalJob, source: Path) -> str:
    return (
        f"# Imported by `tc import-teckochecker` from {source.name} (original job "
        f"{job.id}, status {job.status}) on {to_iso(utc_now())}.\n"
        "# The description is the original job's name.\n"
    )


def _decrypt(
    original: OriginalDatabase, used: list[int], secret_key: str | None
) -> dict[int, str]:
    if secret_key is None:
        return {}
    key = original_key(secret_key)
    values = {}
    for secret_id in used:
        secret = original.secrets[secret_id]
        value = key.decrypt(secret.value)
        if value is None:
            msg = (
                f"secret {secret.name!r} (id {secret_id}) of {original.path} cannot "
                "be decrypted with the given --secret-key; give the SECRET_KEY the "
                "original TeckoChecker ran with. Nothing was imported."
            )
            raise SecretError(msg)
        values[secret_id] = value
    return values


def _report_dry_run(
    report: ImportReport,
    planned: list[_Planned],
    original: OriginalDatabase,
    secret_names: dict[int, str],
    used: list[int],
    values: dict[int, str],
) -> None:
    for secret_id in used:
        secret = original.secrets[secret_id]
        report.secrets.append(
            ImportedSecret(
                secret_names[secret_id],
                secret_id,
                secret.name,
                _secret_type(secret),
                secret_id in values,
            )
        )
    for plan in planned:
        report.jobs.append(_imported(plan))
    _note_unused_secrets(report, original, used)


def _store_secrets(
    report: ImportReport,
    store: Store,
    original: OriginalDatabase,
    secret_names: dict[int, str],
    used: list[int],
    values: dict[int, str],
) -> None:
    vault = SecretVault(store)
    for secret_id in used:
        secret = original.secrets[secret_id]
        name = secret_names[secret_id]
        stored = False
        if secret_id in values and store.secret(name) is not None:
            report.warnings.append(
                f"secret {name} is already in the secret store; it was kept, "
                f"and the value of the original's {secret.name!r} was not stored"
            )
        elif secret_id in values:
            try:
                vault.put(name, values[secret_id], _secret_type(secret))
                stored = True
            except SecretError as error:
                report.skipped.append(
                    Skipped(f"secret {secret_id} {secret.name!r}", str(error))
                )
        in_store = stored or store.secret(name) is not None
        report.secrets.append(
            ImportedSecret(
                name, secret_id, secret.name, _secret_type(secret), stored, in_store
            )
        )


def _note_unused_secrets(
    report: ImportReport, original: OriginalDatabase, used: list[int]
) -> None:
    for secret_id, secret in sorted(original.secrets.items()):
        if secret_id not in used:
            report.skipped.append(
                Skipped(
                    f"secret {secret_id} {secret.name!r}",
                    "no imported job refers to it",
                    problem=False,
                )
            )


def _secret_type(secret: OriginalSecret) -> str | None:
    return secret.type if secret.type in ("openai", "keboola") else None


def _imported(plan: _Planned) -> ImportedJob:
    job = plan.original
    return ImportedJob(
        name=plan.name,
        path=plan.path,
        original_id=job.id,
        original_name=job.name,
        original_status=job.status,
        batch_count=len(plan.spec.batch_ids),
        terminal_count=len(plan.terminal),
        trigger=plan.trigger,
        text=plan.text,
    )


def _write_job(
    report: ImportReport, store: Store, plan: _Planned, source: Path
) -> None:
    """Seed the state database with a job and write its file, both or neither."""
    what = f"job {plan.original.id} {plan.original.name!r}"
    if store.job(plan.name) is not None:
        reason = (
            f"the state database already has a job named {plan.name}; remove it "
            "with `tc apply` after its file is gone, then import again"
        )
        report.skipped.append(Skipped(what, reason))
        return
    written = False
    try:
        with store.transaction():
            _seed(store, plan, source)
            _create_file(plan.path, plan.text)
            written = True
    except FileExistsError:
        reason = f"{plan.path} exists and is never overwritten"
        report.skipped.append(Skipped(what, reason, problem=False))
        return
    except BaseException:
        if written:
            plan.path.unlink(missing_ok=True)
        raise
    report.jobs.append(_imported(plan))
    log.info("Imported %s as %s", what, plan.path)


def _seed(store: Store, plan: _Planned, source: Path) -> None:
    job = plan.original
    name = plan.name
    store.insert_job(
        name,
        path=str(plan.path),
        revision=plan.revision,
        spec=plan.spec.model_dump(mode="json"),
        spec_revision=plan.revision,
        file_error=None,
        status="active",
    )
    store.set_batch_ids(name, list(plan.spec.batch_ids))
    for batch_id, (status, terminal_at) in plan.terminal.items():
        store.update_batch(name, batch_id, status=status, terminal_at=terminal_at)
    if plan.trigger is not None:
        _seed_trigger(store, plan)

    # The status the first cycle would derive, so that `tc status` is right
    # before it runs.
    trigger = None
    row = store.job(name)
    assert row is not None
    if row.trigger_id is not None:
        trigger = store.trigger(row.trigger_id)
    status = derive_status(
        file_invalid=False,
        suspended=plan.spec.suspend,
        batches=store.batches(name),
        trigger=trigger,
    )
    store.update_job(name, status=status)

    store.add_event(
        name,
        "imported",
        f"imported from {source.name}: original job {job.id} {job.name!r}, "
        f"status {job.status}",
    )


def _seed_trigger(store: Store, plan: _Planned) -> None:
    job = plan.original
    trigger_id = new_trigger_id()
    batches = store.batches(plan.name)
    variables = dict(build_variables(plan.name, trigger_id, batches))
    if plan.trigger == "accepted":
        message = (
            "sent by the original TeckoChecker before the import; the id of its "
            "Keboola job is not known"
        )
    else:
        message = (
            f"the original TeckoChecker recorded the job as {job.status}, so "
            f"nothing is sent after the import; `tc rerun {plan.name}` sends it"
        )
    queue_url = queue_url_for(plan.spec.keboola.stack_url, plan.spec.keboola.queue_url)
    store.claim_trigger(
        plan.name,
        {
            "id": trigger_id,
            "revision": plan.revision,
            "batch_ids": [b.batch_id for b in batches],
            "target": {
                "queue_url": queue_url,
                "component_id": plan.spec.keboola.component_id,
                "configuration_id": plan.spec.keboola.configuration_id,
            },
            "state": plan.trigger,
            "claimed_at": to_iso(utc_now()),
            "sent_at": job.completed_at,
            "attempts": 0,
            "keboola_message": message,
            "keboola_finished": True,
            "parameters": {k: variables[k] for k in ORIGINAL_VARIABLES},
        },
    )


def _create_file(path: Path, text: str) -> None:
    """Write a new file atomically; raise FileExistsError if ``path`` exists."""
    temporary = path.with_name(f".{path.name}.import-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # A hard link fails when the target exists, so nothing is overwritten.
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
