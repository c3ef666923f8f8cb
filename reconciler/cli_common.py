"""Consoles, settings and error helpers shared by every ``tc`` command module.

They live apart from ``reconciler.cli``, which registers the other command
modules at its end, so that those can import them without an import cycle.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from reconciler.errors import TCError

if TYPE_CHECKING:
    from reconciler.settings import Settings

# Off a terminal (a pipe, a CI log) rich would wrap at 80 columns; without
# wrapping each entry and each message stays on one line, for grep.
out = Console(
    highlight=False,
    width=None if sys.stdout.isatty() else 200,
    soft_wrap=not sys.stdout.isatty(),
)
err = Console(
    stderr=True,
    highlight=False,
    width=None if sys.stderr.isatty() else 200,
    soft_wrap=not sys.stderr.isatty(),
)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Directory of the state database (env TC_STATE_DIR; default .tc).",
        show_default=False,
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error on standard error and exit with ``code``."""
    err.print(f"[red]Error:[/red] {escape(message)}")
    raise typer.Exit(code)


def load_settings(state_dir: Path | None = None) -> Settings:
    """Return the settings from the environment, with ``--state-dir`` applied."""
    from reconciler.settings import Settings

    try:
        return Settings.from_env().with_overrides(state_dir=state_dir)
    except TCError as error:
        fail(str(error))
