"""Resolution of the secret references that job files contain.

A job file never holds a token. It holds a reference:

- ``env:VAR``: the value of an environment variable;
- ``file:PATH``: the content of a file, as Kubernetes and Docker mount
  secrets (one trailing newline is removed);
- ``secret:NAME``: a value from the encrypted store in the state database.

Every reference is resolved here and nowhere else. Errors name the reference
and what to do, never the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from reconciler.errors import SecretError


class SecretSource(Protocol):
    """The encrypted store's read side, as the resolver needs it."""

    def reveal(self, name: str) -> str:
        """Return the clear value of secret ``name``; raise SecretError if unknown."""
        ...


class SecretResolver:
    """Turns secret references into values.

    Args:
        store: the encrypted store, or None where it is not available (then a
            ``secret:`` reference is an error that says so).
        environ: the environment to read ``env:`` references from.
        base_dir: directory that relative ``file:`` paths start from.
    """

    def __init__(
        self,
        store: SecretSource | None = None,
        environ: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self._store = store
        self._environ = os.environ if environ is None else environ
        self._base_dir = base_dir or Path.cwd()

    def resolve(self, reference: str, *, field: str) -> str:
        """Return the value a reference points to.

        Args:
            reference: ``env:VAR``, ``file:PATH`` or ``secret:NAME``.
            field: the job-file field that holds it, for error messages.

        Raises:
            SecretError: the variable, file or stored secret is missing or empty.
        """
        kind, _, target = reference.partition(":")
        if kind == "env":
            value = self._environ.get(target)
            if not value:
                state = "empty" if value == "" else "not set"
                msg = (
                    f"{field} refers to env:{target}, which is {state}; "
                    f"export {target} in the reconciler's environment"
                )
                raise SecretError(msg)
            return value
        if kind == "file":
            return self._read_file(target, field)
        if kind == "secret":
            if self._store is None:
                msg = (
                    f"{field} refers to secret:{target}, but no secret store is "
                    "open here; run the command with the state directory"
                )
                raise SecretError(msg)
            return self._store.reveal(target)
        msg = f"{field} is not a secret reference; use secret:NAME, env:VAR or file:PATH"
        raise SecretError(msg)

    def _read_file(self, target: str, field: str) -> str:
        path = Path(target)
        if not path.is_absolute():
            path = self._base_dir / path
        try:
            value = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            msg = f"{field} refers to file:{target}, which does not exist; mount it"
            raise SecretError(msg) from None
        except (OSError, UnicodeDecodeError) as error:
            reason = type(error).__name__
            msg = f"{field} refers to file:{target}, which cannot be read ({reason})"
            raise SecretError(msg) from None
        value = value.removesuffix("\n").removesuffix("\r")
        if not value:
            msg = f"{field} refers to file:{target}, which is empty"
            raise SecretError(msg)
        return value
