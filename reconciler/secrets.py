"""Resolution of the secret references that job files contain.

A job file never holds a token. It holds a reference:

- ``env:VAR``: the value of an environment variable;
- ``file:PATH``: the content of a file, as Kubernetes and Docker mount
  secrets (one trailing newline is removed);
- ``secret:NAME``: a value from the encrypted store in the state database.

Every reference is resolved here and nowhere else. Errors name the reference
and what to do, never the value.

The encrypted store (``SecretVault``) keeps each value as a Fernet token in the
state database. The key comes from ``TC_SECRET_KEY`` or, when that is unset,
from the key file ``secret.key`` in the state directory, which is created with
mode 0600 on first write. Neither the key nor a value is ever put in a message,
a log record or a repr.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken

from reconciler.errors import SecretError
from reconciler.store import SecretRow, Store

log = logging.getLogger(__name__)


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
                    f"{field} refers to secret:{target}, but this operation runs "
                    "without the state database, which holds the secret store"
                )
                raise SecretError(msg)
            try:
                return self._store.reveal(target)
            except SecretError as error:
                raise SecretError(f"{field}: {error}") from None
        msg = (
            f"{field} is not a secret reference; use secret:NAME, env:VAR or file:PATH"
        )
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


# ----------------------------------------------------------------------------
# The encrypted store

KEY_ENV_VAR = "TC_SECRET_KEY"
KEY_FILE_NAME = "secret.key"
SECRET_TYPES = ("openai", "keboola")
SECRET_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""The NAME of a ``secret:NAME`` reference, as job files accept it."""

MAX_VALUE_LENGTH = 8192
GENERATE_KEY_COMMAND = (
    "python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'"
)
# Values are sent in HTTP headers, which carry printable ASCII only.
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
# Names that look like a token: the value went where the name belongs.
_TOKEN_LIKE_NAME = re.compile(r"sk-.*|[0-9]+-[0-9]+-[A-Za-z0-9]+")


class SecretKey:
    """A Fernet key and where it was read from; no repr or message shows the key.

    Args:
        key: the key, 32 bytes in URL-safe base64.
        source: where the key comes from, for messages (``TC_SECRET_KEY``,
            ``key file PATH``).
        path: the key file, or None when the key does not come from a file.
    """

    __slots__ = ("_fernet", "_key", "path", "source")

    def __init__(self, key: bytes, *, source: str, path: Path | None = None) -> None:
        self._key = key
        self._fernet = Fernet(key)
        self.source = source
        self.path = path

    def __repr__(self) -> str:
        return f"SecretKey(source={self.source!r})"

    def same_as(self, other: SecretKey) -> bool:
        """Tell whether two keys are the same key."""
        return self._key == other._key

    def encrypt(self, value: str) -> str:
        """Return ``value`` as a Fernet token."""
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str | None:
        """Return the value of a Fernet token, or None when this key cannot open it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            return None


def parse_key(text: str, where: str) -> bytes:
    """Check that ``text`` is a Fernet key and return it as bytes.

    Raises:
        SecretError: it is not 32 bytes in URL-safe base64. The message names
            ``where`` and never quotes the text.
    """
    candidate = text.strip().encode("ascii", "replace")
    try:
        Fernet(candidate)
    except ValueError:
        msg = (
            f"{where} is not a valid Fernet key: a key is 32 random bytes in "
            f"URL-safe base64 (44 characters); generate one with "
            f"{GENERATE_KEY_COMMAND}"
        )
        raise SecretError(msg) from None
    return candidate


def check_secret_name(name: str) -> None:
    """Raise unless ``name`` can be written as ``secret:NAME`` in a job file.

    Raises:
        SecretError: the name is invalid or looks like a token; the message
            then does not repeat it.
    """
    if _TOKEN_LIKE_NAME.fullmatch(name):
        msg = (
            "the secret name looks like a token; give a name such as "
            "openai-prod, and the value on standard input or at the prompt, "
            "never on the command line"
        )
        raise SecretError(msg)
    if not SECRET_NAME_PATTERN.fullmatch(name):
        msg = (
            f"{name!r} is not a valid secret name: it starts with a letter or "
            "digit and contains only letters, digits, '.', '_' and '-'"
        )
        raise SecretError(msg)


def check_secret_value(name: str, value: str) -> None:
    """Raise unless ``value`` can be sent as a token in an HTTP header.

    Raises:
        SecretError: the value is empty, has several lines, surrounding spaces
            or characters other than printable ASCII, or is too long. The
            message never quotes the value.
    """
    problem = None
    if not value:
        problem = "is empty"
    elif "\n" in value or "\r" in value:
        problem = "has several lines, but a token is one line"
    elif len(value) > MAX_VALUE_LENGTH:
        problem = f"is longer than {MAX_VALUE_LENGTH} characters"
    elif value != value.strip():
        problem = "starts or ends with a space"
    elif not _HEADER_VALUE.fullmatch(value):
        problem = (
            "contains characters other than printable ASCII, which an HTTP "
            "header cannot carry"
        )
    if problem is not None:
        msg = f"the value of secret {name} {problem}; check what was given"
        raise SecretError(msg)


@dataclass(frozen=True)
class KeyRotation:
    """The outcome of a key rotation.

    Attributes:
        count: how many secrets were encrypted again.
        key_file: the key file that now contains the new key, or None when the
            key comes from ``TC_SECRET_KEY`` and the operator must update it.
    """

    count: int
    key_file: Path | None


class SecretVault:
    """The encrypted secret store of one state database; a ``SecretSource``.

    Every value is stored as a Fernet token. The key is read when first
    needed: ``TC_SECRET_KEY`` when it is set, otherwise the key file
    ``secret.key`` beside the database, which the first write creates with
    mode 0600.

    Args:
        store: the open state database.
        environ: the environment that ``TC_SECRET_KEY`` is read from;
            ``os.environ`` when None.
    """

    def __init__(self, store: Store, environ: Mapping[str, str] | None = None) -> None:
        self._store = store
        self._environ = os.environ if environ is None else environ
        self.key_path = store.path.parent / KEY_FILE_NAME
        self._key: SecretKey | None = None

    def __repr__(self) -> str:
        return f"SecretVault({str(self._store.path)!r})"

    @property
    def key_from_environment(self) -> bool:
        """True when the key comes from ``TC_SECRET_KEY``, not from the key file."""
        return bool(self._environ.get(KEY_ENV_VAR, "").strip())

    def reveal(self, name: str) -> str:
        """Return the clear value of secret ``name``.

        Raises:
            SecretError: the secret is not stored, or the key cannot decrypt it.
        """
        row = self._store.secret(name)
        if row is None:
            msg = (
                f"secret {name} is not in the secret store; store it with "
                f"`tc secret set {name}`"
            )
            raise SecretError(msg)
        return self._decrypt(row)

    def entries(self) -> list[SecretRow]:
        """Return every stored secret, sorted by name, still encrypted."""
        return self._store.secrets()

    def put(self, name: str, value: str, secret_type: str | None = None) -> bool:
        """Encrypt and store a secret, replacing one of the same name.

        Returns:
            True when the secret is new.

        Raises:
            SecretError: the name, value or type is invalid, the key is
                invalid, or the key does not decrypt the secrets already
                stored (storing under it would leave two keys in use).
        """
        check_secret_name(name)
        check_secret_value(name, value)
        if secret_type is not None and secret_type not in SECRET_TYPES:
            msg = f"secret type {secret_type!r} is unknown; use openai or keboola"
            raise SecretError(msg)
        with self._locked_key(create=True) as key:
            assert key is not None
            for row in self._store.secrets():
                if row.name != name and key.decrypt(row.ciphertext) is None:
                    msg = (
                        f"the key from {key.source} does not decrypt secret "
                        f"{row.name}, which is already stored; use the key the "
                        f"store was written with, so that one key opens every "
                        "secret"
                    )
                    raise SecretError(msg)
            return self._store.put_secret(name, key.encrypt(value), secret_type)

    def delete(self, name: str) -> bool:
        """Delete a stored secret; return True when it existed."""
        return self._store.delete_secret(name)

    def rotate_key(self, new_key: str | None = None) -> KeyRotation:
        """Encrypt every secret again under a new key, in one transaction.

        With the key file, the new key is generated (or ``new_key`` is used)
        and written to the key file once the secrets are committed. With
        ``TC_SECRET_KEY``, ``new_key`` is required and the operator then sets
        ``TC_SECRET_KEY`` to it.

        Raises:
            SecretError: the new key is missing, invalid or the current key;
                or a stored secret cannot be decrypted with the current key
                (then nothing changes).
        """
        if new_key is None and self.key_from_environment:
            msg = (
                f"the key comes from {KEY_ENV_VAR}, so give the new key: put it "
                "in a file and pass --new-key-file PATH, or pipe it on standard "
                f"input; generate one with {GENERATE_KEY_COMMAND}"
            )
            raise SecretError(msg)
        raw = parse_key(new_key, "the new key") if new_key else Fernet.generate_key()
        fresh = SecretKey(raw, source="the new key")
        pending = _pending_path(self.key_path)
        wrote_pending = False
        try:
            with self._locked_key(create=False) as current:
                if current is not None and current.same_as(fresh):
                    msg = "the new key is the current key; give a different one"
                    raise SecretError(msg)
                values = {
                    row.name: self._decrypt_with(current, row)
                    for row in self._store.secrets()
                }
                if not self.key_from_environment:
                    # A leftover of a rotation that was rolled back.
                    pending.unlink(missing_ok=True)
                    _write_key_file(pending, raw)
                    wrote_pending = True
                count = self._store.replace_secret_ciphertexts(
                    lambda row: fresh.encrypt(values[row.name])
                )
        except BaseException:
            if wrote_pending:
                pending.unlink(missing_ok=True)
            raise
        if self.key_from_environment:
            self._key = fresh
            return KeyRotation(count, None)
        _replace_key_file(pending, self.key_path)
        self._key = None
        log.info("Secret key rotated: %d secrets encrypted again", count)
        return KeyRotation(count, self.key_path)

    # Keys

    @contextmanager
    def _locked_key(self, *, create: bool) -> Iterator[SecretKey | None]:
        """Open a write transaction and read the key inside it.

        Reading the key under the write lock means that a rotation committed
        by another process is seen, so nothing is encrypted under a key that
        was just replaced.
        """
        with self._store.transaction():
            self._key = None
            self._finish_rotation()
            yield self._current_key(create=create)

    def _current_key(self, *, create: bool = False) -> SecretKey | None:
        if self._key is None:
            self._key = self._load_key(create=create)
        return self._key

    def _load_key(self, *, create: bool) -> SecretKey | None:
        raw = self._environ.get(KEY_ENV_VAR, "")
        if raw.strip():
            return SecretKey(parse_key(raw, KEY_ENV_VAR), source=KEY_ENV_VAR)
        key = _read_key_file(self.key_path)
        if key is None and create:
            key = _create_key_file(self.key_path)
        return key

    def _decrypt(self, row: SecretRow) -> str:
        key = self._current_key()
        value = key.decrypt(row.ciphertext) if key is not None else None
        if value is None and not self.key_from_environment:
            # Another process may have rotated the key since it was read.
            self._key = None
            self._finish_rotation()
            key = self._current_key()
            value = key.decrypt(row.ciphertext) if key is not None else None
        if value is None:
            raise SecretError(self._undecryptable(row.name, key))
        return value

    def _decrypt_with(self, key: SecretKey | None, row: SecretRow) -> str:
        value = key.decrypt(row.ciphertext) if key is not None else None
        if value is None:
            msg = self._undecryptable(row.name, key) + "; nothing was changed"
            raise SecretError(msg)
        return value

    def _undecryptable(self, name: str, key: SecretKey | None) -> str:
        if key is None:
            return (
                f"secret {name} cannot be decrypted: {KEY_ENV_VAR} is not set and "
                f"the key file {self.key_path} does not exist; restore the key it "
                f"was stored with, or store it again with `tc secret set {name}`"
            )
        return (
            f"secret {name} cannot be decrypted with the key from {key.source}, "
            "so it was stored under another key; use that key, or store the "
            f"secret again with `tc secret set {name}`"
        )

    def _finish_rotation(self) -> None:
        """Complete a key rotation whose process stopped after its commit.

        A rotation writes the new key to ``secret.key.new``, commits the
        secrets encrypted under it, then renames that file to ``secret.key``.
        When the pending key decrypts a stored secret, the commit happened and
        the rename is done here. Otherwise the file is the leftover of a
        rotation that was rolled back, and the next rotation removes it.
        """
        if self.key_from_environment:
            return
        pending_path = _pending_path(self.key_path)
        try:
            pending = _read_key_file(pending_path)
        except SecretError as error:
            log.warning(
                "Pending key file %s is ignored, the current key stays in use: %s",
                pending_path,
                error,
            )
            return
        if pending is None:
            return
        rows = self._store.secrets()
        if not any(pending.decrypt(row.ciphertext) is not None for row in rows):
            return
        _replace_key_file(pending_path, self.key_path)
        log.warning(
            "Finished an interrupted key rotation: %s now contains the new key",
            self.key_path,
        )


def _pending_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".new")


def _read_key_file(path: Path) -> SecretKey | None:
    """Read a key file; return None when it does not exist.

    Raises:
        SecretError: the file is open to group or others, unreadable or not a key.
    """
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            msg = (
                f"secret key file {path} can be read or written by group or "
                f"others (mode {mode:04o}); run `chmod 600 {path}`"
            )
            raise SecretError(msg)
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        msg = f"secret key file {path} cannot be read ({reason})"
        raise SecretError(msg) from None
    key = parse_key(text, f"secret key file {path}")
    return SecretKey(key, source=f"key file {path}", path=path)


def _create_key_file(path: Path) -> SecretKey:
    """Create a key file with a new key, or read the one another process created."""
    key = Fernet.generate_key()
    try:
        _write_key_file(path, key)
    except FileExistsError:
        existing = _read_key_file(path)
        assert existing is not None
        return existing
    log.info("Created the secret key file %s (mode 0600)", path)
    return SecretKey(key, source=f"key file {path}", path=path)


def _write_key_file(path: Path, key: bytes) -> None:
    """Write a new key file with mode 0600; fail if the file exists.

    Raises:
        FileExistsError: the file exists.
        SecretError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise
    except OSError as error:
        msg = f"secret key file {path} cannot be created ({error.strerror})"
        raise SecretError(msg) from None
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, key + b"\n")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    _fsync_directory(path.parent)


def _replace_key_file(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except FileNotFoundError:
        return  # another process finished the same rotation first
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
