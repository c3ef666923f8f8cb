"""The operations behind ``tc secret``: set, list, remove, rotate the key.

Each opens the state database, works through the ``SecretVault`` and closes
it. Nothing here prints, and no value is ever returned except by ``reveal``
in the vault itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import JobFileError, SecretError
from reconciler.secrets import KeyRotation, SecretVault, check_secret_name
from reconciler.settings import Settings
from reconciler.spec import discover
from reconciler.store import Store


class SecretInUseError(SecretError):
    """A secret that job files still refer to was to be removed without --force."""

    def __init__(self, message: str, paths: list[Path]) -> None:
        super().__init__(message)
        self.paths = paths


@dataclass(frozen=True)
class SecretInfo:
    """The name, type and dates of a stored secret, as ``tc secret list`` shows them."""

    name: str
    type: str | None
    created_at: str
    updated_at: str


def set_secret(
    settings: Settings, name: str, value: str, secret_type: str | None = None
) -> bool:
    """Encrypt and store a secret, creating the state database if needed.

    Returns:
        True when the secret is new, False when it replaced one.

    Raises:
        SecretError: the name, value or type is invalid, or the key is unusable.
        StoreError: the state database cannot be opened or written.
    """
    store = Store.open(settings.state_dir)
    try:
        return SecretVault(store).put(name, value, secret_type)
    finally:
        store.close()


def list_secrets(settings: Settings) -> list[SecretInfo]:
    """Return the names, types and dates of the stored secrets, by name."""
    if not settings.database_path.exists():
        return []
    store = Store.open(settings.state_dir, create=False)
    try:
        return [
            SecretInfo(row.name, row.type, row.created_at, row.updated_at)
            for row in store.secrets()
        ]
    finally:
        store.close()


def remove_secret(
    settings: Settings, name: str, job_dir: Path, *, force: bool = False
) -> list[Path]:
    """Delete a stored secret unless job files in ``job_dir`` refer to it.

    Returns:
        The job files that still refer to the secret (only with ``force``).

    Raises:
        SecretInUseError: job files refer to it and ``force`` is False.
        SecretError: there is no secret of that name, or the job directory
            cannot be read and ``force`` is False.
    """
    check_secret_name(name)
    try:
        users = find_references(job_dir, name, settings.max_batch_ids)
    except JobFileError:
        if not force:
            msg = (
                f"cannot check whether job files refer to secret {name}, because "
                f"the job directory {job_dir} cannot be read; pass --dir with the "
                "job directory, or --force"
            )
            raise SecretError(msg) from None
        users = []
    if users and not force:
        files = ", ".join(str(path) for path in users)
        msg = (
            f"secret {name} is referred to by {files}; change those job files "
            "first, or pass --force to remove it anyway"
        )
        raise SecretInUseError(msg, users)
    missing = f"no secret named {name} in the secret store; `tc secret list` shows them"
    if not settings.database_path.exists():
        raise SecretError(missing)
    store = Store.open(settings.state_dir, create=False)
    try:
        if not SecretVault(store).delete(name):
            raise SecretError(missing)
    finally:
        store.close()
    return users


def find_references(job_dir: Path, name: str, max_batch_ids: int) -> list[Path]:
    """Return the job files of ``job_dir`` that refer to ``secret:NAME``.

    A valid file is checked field by field. An invalid one is searched as
    text, so that a file with an unrelated error still counts.

    Raises:
        JobFileError: the directory is missing or unreadable.
    """
    reference = f"secret:{name}"
    pattern = re.compile(re.escape(reference) + r"(?![A-Za-z0-9_.-])")
    found = []
    for job_file in discover(job_dir, max_batch_ids=max_batch_ids):
        spec = job_file.spec
        if spec is not None:
            used = reference in (spec.openai.api_key, spec.keboola.token)
        else:
            try:
                text = job_file.path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            used = pattern.search(text) is not None
        if used:
            found.append(job_file.path)
    return found


def rotate_key(settings: Settings, new_key: str | None = None) -> KeyRotation:
    """Encrypt every stored secret again under a new key, in one transaction.

    Args:
        settings: the operator's settings; the state directory is used.
        new_key: the new Fernet key; None generates one, which only works
            when the key comes from the key file.

    Raises:
        SecretError: see ``SecretVault.rotate_key``.
    """
    store = Store.open(settings.state_dir)
    try:
        return SecretVault(store).rotate_key(new_key)
    finally:
        store.close()
