"""``tc import-teckochecker``: job files from an original TeckoChecker database."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from reconciler.cli_common import StateDir, err, fail, load_settings, out
from reconciler.errors import TCError

if TYPE_CHECKING:
    from reconciler.importer import ImportReport


def import_teckochecker(
    database: Annotated[
        Path,
        typer.Argument(help="The original's SQLite database (teckochecker.db)."),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory the job files are written to.")
    ] = Path("jobs.d"),
    secret_key: Annotated[
        str | None,
        typer.Option(
            "--secret-key",
            help="The original's SECRET_KEY, to store its secrets' values in the "
            "encrypted store. --secret-key-file keeps it out of shell history.",
            show_default=False,
        ),
    ] = None,
    secret_key_file: Annotated[
        Path | None,
        typer.Option(
            "--secret-key-file",
            help="File holding the original's SECRET_KEY.",
            show_default=False,
        ),
    ] = None,
    include_finished: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also import finished jobs (completed, completed_with_failures, "
            "failed); they are not triggered again.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be written only.")
    ] = False,
    openai_base_url: Annotated[
        str | None,
        typer.Option(
            "--openai-base-url",
            help="openai.base_url written into every job file. Without it the "
            "files use https://api.openai.com/v1, as the original did.",
            show_default=False,
        ),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Write one job file per job of an original TeckoChecker database.

    Active and paused jobs are imported (paused ones with suspend: true), and
    finished ones with --all. Batch statuses the original recorded as terminal
    and triggers it sent go into the state database, so nothing is triggered
    twice. Existing files are never overwritten.

    Example: tc import-teckochecker teckochecker.db --secret-key-file key.txt
    """
    from reconciler.importer import ImportOptions, import_database

    if secret_key is not None and secret_key_file is not None:
        raise typer.BadParameter(
            "give either --secret-key or --secret-key-file, not both"
        )
    if secret_key_file is not None:
        secret_key = _read_key_file(secret_key_file)
    settings = load_settings(state_dir)
    options = ImportOptions(
        out_dir=out_dir,
        secret_key=secret_key,
        include_finished=include_finished,
        dry_run=dry_run,
        openai_base_url=openai_base_url,
    )
    try:
        report = import_database(database, settings, options)
    except TCError as error:
        fail(str(error))
    _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def _read_key_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        fail(f"cannot read the secret key file {path} ({reason})")
    # The trailing line break that editors and `echo` add is not part of the key.
    key = text.removesuffix("\n").removesuffix("\r")
    if not key:
        fail(f"the secret key file {path} is empty")
    return key


def _print_report(report: ImportReport) -> None:
    verb = "Would write" if report.dry_run else "Wrote"
    for job in report.jobs:
        details = f"{job.batch_count} batches, {job.terminal_count} terminal"
        if job.trigger is not None:
            details += f", trigger {job.trigger}"
        out.print(
            f"[green]+[/green] {escape(str(job.path))}  from job {job.original_id} "
            f"{escape(repr(job.original_name))} ({job.original_status}): {details}"
        )
        if report.dry_run:
            for line in job.text.splitlines():
                out.print(f"      {escape(line)}", soft_wrap=True)
    for secret in report.secrets:
        kind = f" ({secret.type})" if secret.type else ""
        if secret.stored:
            state = "would be stored" if report.dry_run else "stored"
        elif secret.in_store:
            state = "already in the secret store, kept"
        else:
            state = f"value not stored; run `tc secret set {secret.name}`"
        out.print(f"  secret {escape(secret.name)}{kind}: {escape(state)}")
    for skipped in report.skipped:
        label = "[red]skipped[/red]" if skipped.problem else "skipped"
        err.print(f"{label} {escape(skipped.what)}: {escape(skipped.reason)}")
    for warning in report.warnings:
        err.print(f"[yellow]Warning:[/yellow] {escape(warning)}")

    stored = sum(1 for s in report.secrets if s.stored)
    skipped_jobs = sum(1 for s in report.skipped if s.what.startswith("job "))
    out.print(
        f"{verb} {len(report.jobs)} job files with {report.batch_count} batches "
        f"to {escape(str(report.out_dir))}; {stored} of {len(report.secrets)} "
        f"secrets {'would be ' if report.dry_run else ''}stored; "
        f"{skipped_jobs} jobs skipped. Source: {escape(str(report.source))} "
        f"({report.schema} schema)."
    )
    if report.dry_run:
        out.print("Dry run: nothing was written.")
    elif report.jobs:
        out.print(
            f"Next: tc validate {escape(str(report.out_dir))}, then "
            f"tc apply {escape(str(report.out_dir))}."
        )
