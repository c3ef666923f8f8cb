"""``tc secret``: the encrypted secret store, from the command line.

Values are read from standard input or a hidden prompt, never from an
argument, which would end up in shell history and in ``ps``. Nothing here
prints a value or a key.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from reconciler.cli_common import StateDir, err, fail, load_settings, out
from reconciler.errors import TCError

secret_app = typer.Typer(
    name="secret",
    help="The encrypted secret store that secret:NAME references read from.",
    no_args_is_help=True,
)


class SecretType(StrEnum):
    """The purpose of a secret, shown by `tc secret list`."""

    openai = "openai"
    keboola = "keboola"


class OutputFormat(StrEnum):
    """Output formats of `tc secret list`."""

    table = "table"
    json = "json"


SecretName = Annotated[
    str, typer.Argument(help="The secret's name, as written in secret:NAME.")
]


@secret_app.command("set")
def set_secret(
    name: SecretName,
    secret_type: Annotated[
        SecretType | None,
        typer.Option("--type", help="What the secret is for: openai or keboola."),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Store a secret, encrypted; replaces a secret of the same name.

    The value is read from standard input, or from a hidden prompt on a
    terminal. Example: tc secret set openai-prod --type openai < key.txt
    """
    from reconciler import secret_ops

    settings = load_settings(state_dir)
    value = _read_value(f"Value of secret {name}", confirm=True)
    kind = secret_type.value if secret_type is not None else None
    try:
        created = secret_ops.set_secret(settings, name, value, kind)
    except TCError as error:
        fail(str(error))
    what = "stored" if created else "replaced"
    out.print(f"Secret {escape(name)} {what}; refer to it as secret:{escape(name)}.")


@secret_app.command("list")
def list_secrets(
    output: Annotated[
        OutputFormat,
        typer.Option("--output", "-o", help="Output format: table or json."),
    ] = OutputFormat.table,
    state_dir: StateDir = None,
) -> None:
    """List the stored secrets: names, types and dates, never values."""
    from reconciler import secret_ops

    settings = load_settings(state_dir)
    try:
        secrets = secret_ops.list_secrets(settings)
    except TCError as error:
        fail(str(error))
    if output is OutputFormat.json:
        rows = [
            {
                "name": s.name,
                "type": s.type,
                "created_at": s.created_at,
                "updated_at": s.updated_at,
            }
            for s in secrets
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if not secrets:
        out.print("No secrets. Store one with `tc secret set NAME`.")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "TYPE", "CREATED", "UPDATED"):
        table.add_column(column)
    for s in secrets:
        table.add_row(escape(s.name), s.type or "-", s.created_at, s.updated_at)
    out.print(table)


@secret_app.command("rm")
def remove_secret(
    name: SecretName,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Remove the secret even while job files refer to it."
        ),
    ] = False,
    job_dir: Annotated[
        Path,
        typer.Option("--dir", help="Directory of the job files to check."),
    ] = Path("jobs.d"),
    state_dir: StateDir = None,
) -> None:
    """Remove a secret, unless a job file in the job directory refers to it."""
    from reconciler import secret_ops

    settings = load_settings(state_dir)
    try:
        users = secret_ops.remove_secret(settings, name, job_dir, force=force)
    except TCError as error:
        fail(str(error))
    out.print(f"Secret {escape(name)} removed.")
    for path in users:
        err.print(
            f"[yellow]Warning:[/yellow] {escape(str(path))} still refers to "
            f"secret:{escape(name)}; that job reports a missing secret until it "
            "is stored again."
        )


@secret_app.command("rotate-key")
def rotate_key(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            "--new-key-file",
            help="File holding the new Fernet key. Without it a key is generated, "
            "unless the key comes from TC_SECRET_KEY: then the new key is read "
            "from standard input or a hidden prompt.",
            show_default=False,
        ),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Encrypt every stored secret again under a new key, in one transaction."""
    from reconciler import secret_ops
    from reconciler.secrets import KEY_ENV_VAR

    settings = load_settings(state_dir)
    from_environment = bool(_environment_key(KEY_ENV_VAR))
    new_key: str | None = None
    if new_key_file is not None:
        try:
            new_key = new_key_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            fail(f"cannot read the new key file {new_key_file} ({reason})")
    elif from_environment:
        new_key = _read_value("New key", confirm=True)
    try:
        rotation = secret_ops.rotate_key(settings, new_key)
    except TCError as error:
        fail(str(error))
    out.print(f"Key rotated: {rotation.count} secrets encrypted under the new key.")
    if rotation.key_file is not None:
        out.print(
            f"The new key is in {escape(str(rotation.key_file))}; copies of the old "
            "key (backups, other machines) no longer open this store."
        )
    else:
        err.print(
            f"[yellow]Next:[/yellow] set {KEY_ENV_VAR} to the new key wherever tc "
            "runs (daemon, cron, CI); until then those runs cannot decrypt the "
            "secrets."
        )


def _environment_key(name: str) -> str:
    return os.environ.get(name, "").strip()


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_value(prompt: str, *, confirm: bool) -> str:
    """Read one value from standard input, or from a hidden prompt on a terminal."""
    if _stdin_is_terminal():
        value: str = typer.prompt(
            prompt, hide_input=True, confirmation_prompt=confirm, err=True
        )
        return value
    text = sys.stdin.read()
    # One trailing line break is what `echo` and most editors add.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        fail(
            "no value on standard input; pipe the value in, or run the command "
            "on a terminal to type it at a hidden prompt"
        )
    return text
