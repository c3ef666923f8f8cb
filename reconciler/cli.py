"""The ``tc`` command: parses arguments, calls one operation, renders the result.

Exit codes: 0 when every job file is valid and no job has an error, 1
otherwise, 2 for wrong usage. ``tc diff`` exits 0 without differences, 1 with
differences and 2 on error.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from reconciler import __version__
from reconciler import cli_common as common
from reconciler.errors import JobFileError, TCError

if TYPE_CHECKING:
    from reconciler import service
    from reconciler.plan import Plan
    from reconciler.report import CycleReport
    from reconciler.settings import Settings
    from reconciler.spec import JobFile

# The core (httpx, pydantic, sqlite-utils) is imported inside the commands
# that use it, so `tc --version` and `tc --help` start in a fraction of the
# time.

app = typer.Typer(
    name="tc",
    help="TeckoChecker: watch OpenAI batches declared in git, trigger Keboola once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out, err = common.out, common.err

DEFAULT_JOB_DIR = Path("jobs.d")

JobDir = Annotated[
    Path, typer.Argument(help="Directory of job files.", show_default=True)
]
StateDir = common.StateDir
Concurrency = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        min=1,
        help="Maximum HTTP requests in flight (env TC_CONCURRENCY; default 10).",
        show_default=False,
    ),
]
LogLevel = Annotated[
    str,
    typer.Option(
        "--log-level",
        help="Log level on standard error: debug, info, warning, error.",
        case_sensitive=False,
    ),
]
LogFormat = Annotated[
    str, typer.Option("--log-format", help="Log format: text or json.")
]


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"tc (TeckoChecker) {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """TeckoChecker: watch OpenAI batches declared in git, trigger Keboola once."""


def _settings(
    state_dir: Path | None = None, concurrency: int | None = None
) -> Settings:
    return common.load_settings(state_dir).with_overrides(concurrency=concurrency)


_fail = common.fail


def _logging(level: str, fmt: str) -> None:
    from reconciler.logconfig import configure_logging

    try:
        configure_logging(level, fmt)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@app.command()
def apply(
    job_dir: JobDir = DEFAULT_JOB_DIR,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan only; write nothing.")
    ] = False,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="Prune every job when the directory has no job files at all.",
        ),
    ] = False,
    state_dir: StateDir = None,
    concurrency: Concurrency = None,
    log_level: LogLevel = "warning",
    log_format: LogFormat = "text",
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Output format: text, or json for scripts."
        ),
    ] = "text",
) -> None:
    """Run one cycle: plan, sync, poll every pending batch, trigger, write status.

    Fit for cron. Example: tc apply jobs.d
    """
    from reconciler import service

    if output not in ("text", "json"):
        raise typer.BadParameter(f"{output!r} is not one of text, json")
    _logging(log_level, log_format)
    settings = _settings(state_dir, concurrency)
    try:
        report = service.apply(
            job_dir, settings, dry_run=dry_run, allow_empty=allow_empty
        )
    except TCError as error:
        _fail(str(error))
    if output == "json":
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
        raise typer.Exit(0 if report.ok else 1)
    _print_plan(report.plan, job_dir)
    _print_invalid(report.invalid_files)
    if not dry_run:
        _print_outcome(report)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def diff(
    job_dir: JobDir = DEFAULT_JOB_DIR,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Show pruning of an empty directory.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Print the plan; exit 0 without differences, 1 with, 2 on error.

    An invalid job file is an error (exit 2), also when its job is unchanged.
    """
    from reconciler import service

    settings = _settings(state_dir)
    try:
        report = service.apply(job_dir, settings, dry_run=True, allow_empty=allow_empty)
    except TCError as error:
        _fail(str(error), code=2)
    _print_plan(report.plan, job_dir)
    _print_invalid(report.invalid_files)
    if report.invalid_files:
        raise typer.Exit(2)
    raise typer.Exit(1 if report.plan.has_changes else 0)


@app.command()
def status(
    names: Annotated[
        list[str] | None, typer.Argument(help="Job names; all jobs when omitted.")
    ] = None,
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="Output format: table, json or yaml."),
    ] = "table",
    state_dir: StateDir = None,
) -> None:
    """Show jobs: a table of all, one job in detail, or -o json / -o yaml."""
    if output not in ("table", "json", "yaml"):
        raise typer.BadParameter(f"{output!r} is not one of table, json, yaml")
    from reconciler import service

    # The command builds a few mappings per job, none in a cycle, and exits:
    # the cyclic collector would only walk them, a twentieth of the run time.
    gc.disable()
    settings = _settings(state_dir)
    try:
        views = service.status(settings, names or [])
    except TCError as error:
        _fail(str(error))
    mappings = [v.as_mapping() for v in views]
    if output == "json":
        sys.stdout.flush()
        sys.stdout.buffer.write(_json_lines(mappings))
        sys.stdout.buffer.flush()
    elif output == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(mappings, sort_keys=False, allow_unicode=True))
    elif names and len(views) == 1:
        _print_job_detail(views[0])
    else:
        _print_status_table(views)
    healthy = all(m["error"] is None and m["status"] != "invalid" for m in mappings)
    raise typer.Exit(0 if healthy else 1)


@app.command()
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Job files or directories; jobs.d when omitted."),
    ] = None,
) -> None:
    """Validate job files only: no database, no secrets. For CI and pre-commit."""
    from reconciler import service

    settings = _settings()
    try:
        files = service.validate(paths or [DEFAULT_JOB_DIR], settings)
    except TCError as error:
        _fail(str(error))
    invalid = [f for f in files if f.error is not None]
    for job_file in files:
        if job_file.error is None:
            out.print(f"[green]ok[/green]      {escape(str(job_file.path))}")
    _print_invalid(invalid)
    if not files:
        err.print("No job files found.")
    raise typer.Exit(1 if invalid else 0)


@app.command()
def schema() -> None:
    """Print the JSON Schema of job files, for editors and CI."""
    from reconciler.spec import job_schema

    sys.stdout.write(json.dumps(job_schema(), indent=2) + "\n")


@app.command()
def rerun(
    name: Annotated[str, typer.Argument(help="The job to trigger again.")],
    state_dir: StateDir = None,
) -> None:
    """Arm a new trigger for a job; the next cycle sends it when batches are done."""
    from reconciler import service

    settings = _settings(state_dir)
    try:
        previous = service.rerun(settings, name)
    except TCError as error:
        _fail(str(error))
    what = f"superseded trigger {previous}" if previous else "no trigger was armed"
    out.print(f"{escape(name)}: a new trigger is armed ({what}).")


# Rendering


def _print_plan(plan: Plan, job_dir: Path) -> None:
    symbols = {
        "create": "[green]+[/green]",
        "update": "[yellow]~[/yellow]",
        "delete": "[red]-[/red]",
    }
    counts = {a: len(plan.of(a)) for a in ("create", "update", "delete", "noop")}
    out.print(
        f"Plan for {escape(str(job_dir))}: {counts['create']} to create, "
        f"{counts['update']} to change, {counts['delete']} to remove, "
        f"{counts['noop']} unchanged."
    )
    for change in plan.changes:
        if change.action == "noop":
            continue
        note = " [red](invalid)[/red]" if change.invalid else ""
        out.print(f"  {symbols[change.action]} {escape(change.name)}{note}")
        for detail in change.details:
            out.print(f"      {escape(detail)}")
    if plan.prune_blocked:
        err.print(
            f"[yellow]Warning:[/yellow] no job files found in {escape(str(job_dir))} "
            f"while {len(plan.held_back)} jobs exist; nothing is pruned. "
            "Pass --allow-empty to prune them."
        )


def _print_invalid(files: list[JobFile]) -> None:
    for job_file in files:
        assert job_file.error is not None
        err.print(f"[red]invalid[/red] {escape(str(job_file.path))}")
        for problem in _problems(job_file.error):
            err.print(f"  {escape(problem)}")


def _problems(error: JobFileError) -> list[str]:
    return [str(p) for p in error.problems] or [str(error)]


def _print_outcome(report: CycleReport) -> None:
    for job in report.jobs:
        lines = list(job.messages)
        if job.previous_status != job.status:
            lines.append(f"status {job.previous_status} -> {job.status}")
        if job.error and job.status != "invalid":
            lines.append(f"[red]error:[/red] {escape(job.error)}")
        for line in lines:
            out.print(f"{escape(job.name)}: {line}")
    for message in report.status_file_errors:
        err.print(f"[red]Error:[/red] {escape(message)}")
    jobs = len(report.jobs)
    written = len(report.status_files_written)
    out.print(
        f"{jobs} job{'' if jobs == 1 else 's'}; "
        f"{written} status file{'' if written == 1 else 's'} written."
    )


def _trigger_cell(trigger: dict[str, Any] | None) -> str:
    if trigger is None:
        return "-"
    cell = str(trigger["state"])
    if trigger.get("keboola_job_id"):
        cell += f" #{trigger['keboola_job_id']}"
    if trigger.get("keboola_status"):
        cell += f" ({trigger['keboola_status']})"
    return cell


def _print_status_table(views: list[service.JobView]) -> None:
    if not views:
        out.print("No jobs. Run `tc apply` to load the job files.")
        return
    header = ("JOB", "STATUS", "BATCHES", "FAILED", "NEXT CHECK", "TRIGGER")
    rows = []
    for view in views:
        m = view.as_mapping()
        summary = m["summary"]
        done = summary["completed"] + summary["failed"]
        rows.append(
            (
                m["job"],
                m["status"],
                f"{done}/{summary['total']}",
                str(summary["failed"]),
                m["next_check_at"] or "-",
                _trigger_cell(m["trigger"]),
            )
        )
    # Plain padded columns, as kubectl prints them, built as one styled text
    # and printed at once: rich's Table, or a print per row, takes about a
    # millisecond per row, which a thousand jobs turn into a visible pause.
    from rich.text import Text

    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    table = Text(
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    )
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        table.append("\n" + cells[0] + "  ")
        table.append(cells[1], style=_STATUS_COLOURS.get(row[1]))
        table.append(("  " + "  ".join(cells[2:])).rstrip())
    if out.is_terminal:
        out.print(table)
    else:
        # Off a terminal rich would print the same characters without
        # colour; writing them directly skips laying out every line.
        sys.stdout.write(table.plain + "\n")


_STATUS_COLOURS = {
    "completed": "green",
    "completed_with_failures": "yellow",
    "failed": "red",
    "invalid": "red",
    "paused": "dim",
}


def _json_lines(mappings: list[dict[str, Any]]) -> bytes:
    """Encode ``tc status -o json`` as an array with one job per line, for grep.

    orjson encodes three times as fast as the json module. It rejects
    integers beyond 64 bits, so a job that contains one is encoded by json.
    """
    import orjson

    lines = []
    for mapping in mappings:
        try:
            lines.append(orjson.dumps(mapping))
        except orjson.JSONEncodeError:
            lines.append(json.dumps(mapping, separators=(",", ":")).encode())
    return b"[\n" + b",\n".join(lines) + b"\n]\n" if lines else b"[]\n"


def _status_markup(value: str) -> str:
    colour = _STATUS_COLOURS.get(value)
    return f"[{colour}]{value}[/{colour}]" if colour else value


def _print_job_detail(view: service.JobView) -> None:
    m = view.as_mapping()
    out.print(
        f"[bold]{escape(m['job'])}[/bold]  {_status_markup(m['status'])}  "
        f"revision {m['revision']}"
    )
    out.print(f"file: {escape(str(m['path']))}")
    out.print(
        f"last check: {m['last_checked_at'] or '-'}   "
        f"next check: {m['next_check_at'] or '-'}"
    )
    if m["error"]:
        out.print(
            f"[red]error[/red] since {m['error']['since']}: "
            f"{escape(m['error']['message'])}"
        )
    from rich.table import Table

    batches = Table(box=None, pad_edge=False, title=None)
    for column in (
        "BATCH",
        "STATUS",
        "REQUESTS",
        "OUTPUT FILE",
        "ERROR FILE",
        "TERMINAL AT",
    ):
        batches.add_column(column)
    for batch in m["batches"]:
        counts = batch["request_counts"] or {}
        requests = (
            f"{counts.get('completed')}/{counts.get('total')} "
            f"({counts.get('failed')} failed)"
            if counts
            else "-"
        )
        batches.add_row(
            batch["id"],
            batch["status"] or "unknown",
            requests,
            batch["output_file_id"] or "-",
            batch["error_file_id"] or "-",
            batch["terminal_at"] or "-",
        )
        if batch.get("error"):
            batches.add_row("", f"[red]{escape(batch['error'])}[/red]", "", "", "", "")
    out.print(batches)
    trigger = m["trigger"]
    if trigger is not None:
        out.print(
            f"trigger {trigger['id']}: {escape(_trigger_cell(trigger))}, "
            f"sent {trigger['sent_at']}"
        )
        if trigger.get("keboola_message"):
            out.print(f"  Keboola: {escape(trigger['keboola_message'])}")
    if view.events:
        out.print("recent events:")
        for event in view.events:
            out.print(f"  {event.at}  {event.kind:<8} {escape(event.message)}")


from reconciler.cli_import import import_teckochecker  # noqa: E402
from reconciler.cli_secrets import secret_app  # noqa: E402

app.add_typer(secret_app, name="secret")
app.command("import-teckochecker")(import_teckochecker)


from reconciler.cli_watch import watch  # noqa: E402

app.command()(watch)


def main() -> None:
    """Run the ``tc`` command."""
    # The objects made while importing live as long as the process. Frozen,
    # they are no longer walked by every full collection, which otherwise
    # takes a tenth of `tc status` on 1,000 jobs.
    gc.freeze()
    app()


if __name__ == "__main__":
    main()
