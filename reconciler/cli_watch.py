"""The ``tc watch`` command: parses its options and runs the daemon.

The core is imported inside the command, as in ``reconciler.cli``, so that
``tc --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from reconciler.errors import TCError

err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


def watch(
    job_dir: Annotated[
        Path, typer.Argument(help="Directory of job files.", show_default=True)
    ] = Path("jobs.d"),
    git_pull: Annotated[
        float | None,
        typer.Option(
            "--git-pull",
            metavar="SECONDS",
            min=1,
            help="Run git pull --ff-only in the job directory's repository every "
            "SECONDS seconds (default: never).",
            show_default=False,
        ),
    ] = None,
    commit_status: Annotated[
        bool,
        typer.Option(
            "--commit-status",
            help="Commit changed status files, and only them, after each cycle.",
        ),
    ] = False,
    push: Annotated[
        bool,
        typer.Option(
            "--push",
            help="Push the status commits; rebase on the remote and retry when "
            "it moved on. Needs --commit-status.",
        ),
    ] = False,
    git_author: Annotated[
        str | None,
        typer.Option(
            "--git-author",
            metavar="'NAME <EMAIL>'",
            help="Author and committer of status commits "
            "(default: TeckoChecker <teckochecker@localhost>).",
            show_default=False,
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            metavar="SECONDS",
            min=0,
            help="Seconds a running cycle may take to finish after SIGTERM or "
            "SIGINT before it is cancelled.",
        ),
    ] = 30.0,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="[HOST:]PORT",
            help="Serve /healthz and /metrics on this address; a bare port "
            "listens on 127.0.0.1 only (default: no server).",
            show_default=False,
        ),
    ] = None,
    stuck_after: Annotated[
        float,
        typer.Option(
            "--stuck-after",
            metavar="SECONDS",
            min=1,
            help="/healthz returns 503 when one cycle or git step runs longer "
            "than this, or the loop oversleeps by as much.",
        ),
    ] = 300.0,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="Prune every job when the directory has no job files at all.",
        ),
    ] = False,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Directory of the state database (env: TC_STATE_DIR; default: .tc).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            help="Log level on standard error: debug, info, warning, error.",
            case_sensitive=False,
        ),
    ] = "info",
    log_format: Annotated[
        str, typer.Option("--log-format", help="Log format: text or json.")
    ] = "text",
) -> None:
    """Run the daemon: cycles when batches are due and when job files change.

    Stops on SIGTERM or SIGINT; SIGHUP reads the job directory again. Only one
    daemon runs per state directory. Example: tc watch jobs.d --git-pull 60
    """
    from reconciler.daemon import WatchOptions
    from reconciler.daemon import watch as run_daemon
    from reconciler.health import parse_http_address
    from reconciler.logconfig import configure_logging
    from reconciler.settings import Settings

    if push and not commit_status:
        raise typer.BadParameter("--push needs --commit-status", param_hint="--push")
    try:
        address = parse_http_address(http) if http is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--http") from None
    if git_author is not None:
        _check_identity(git_author)
    try:
        configure_logging(log_level, log_format)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None

    try:
        settings = Settings.from_env().with_overrides(state_dir=state_dir)
        run_daemon(
            WatchOptions(
                job_dir=job_dir,
                settings=settings,
                allow_empty=allow_empty,
                grace_seconds=grace,
                git_pull_seconds=git_pull,
                commit_status=commit_status,
                push=push,
                git_identity=git_author,
                http=address,
                stuck_after=stuck_after,
            )
        )
    except TCError as error:
        err.print(f"[red]Error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None


def _check_identity(text: str) -> None:
    from reconciler.gitops import parse_identity

    try:
        parse_identity(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--git-author") from None
