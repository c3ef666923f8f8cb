"""Settings of the reconciler, read from ``TC_*`` environment variables.

These are the operator's settings. Nothing in a job file can change them, which
matters for ``allowed_hosts``: it decides where tokens may be sent. Allowed
hosts can also be listed in the settings file ``settings.yaml`` of the state
directory, which is never committed::

    allowed_hosts:
      - queue.keboola.example.com
      - 127.0.0.1
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from reconciler.errors import JobFileError, SettingsError

DEFAULT_STATE_DIR = Path(".tc")
SETTINGS_FILE_NAME = "settings.yaml"


@dataclass(frozen=True)
class Settings:
    """The reconciler's settings.

    Attributes:
        state_dir: directory of the state database (``TC_STATE_DIR``).
        allowed_hosts: extra host names a token may be sent to, besides the
            vendors' own hosts (``TC_ALLOWED_HOSTS``, comma-separated, together
            with ``allowed_hosts`` of the state directory's settings file).
        allowed_hosts_from_file: the hosts that only the settings file added,
            so that another state directory's file can replace them.
        trigger_lookup_grace: seconds after a trigger's send during which an
            unknown outcome is searched for before sending again
            (``TC_TRIGGER_LOOKUP_GRACE``).
        max_batch_ids: maximum number of batch ids in one job file
            (``TC_MAX_BATCH_IDS``).
        concurrency: maximum number of HTTP requests in flight at once
            (``TC_CONCURRENCY``).
        http_timeout: seconds one HTTP request may take (``TC_HTTP_TIMEOUT``).
        retry_attempts: attempts per idempotent request, the first included
            (``TC_RETRY_ATTEMPTS``).
        retry_max_wait: longest ``Retry-After`` in seconds that is waited for
            within a cycle; a longer one defers the request to a later cycle
            (``TC_RETRY_MAX_WAIT``).
        keboola_poll_seconds: seconds between two reads of a running Keboola
            job by the daemon (``TC_KEBOOLA_POLL_SECONDS``).
        poll_strategy: how batches are fetched (``TC_POLL_STRATEGY``):
            ``get`` one request per batch, ``list`` pages of the list
            endpoint first, ``auto`` pages only for keys with many batches.
    """

    state_dir: Path = DEFAULT_STATE_DIR
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    trigger_lookup_grace: float = 60.0
    max_batch_ids: int = 10
    concurrency: int = 10
    http_timeout: float = 30.0
    retry_attempts: int = 4
    retry_max_wait: float = 60.0
    keboola_poll_seconds: float = 15.0
    poll_strategy: Literal["auto", "list", "get"] = "auto"
    allowed_hosts_from_file: frozenset[str] = field(
        default_factory=frozenset, repr=False, compare=False
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``TC_*`` variables; unset ones keep their default.

        The allowed hosts of the state directory's settings file are added.

        Raises:
            SettingsError: a variable holds a value of the wrong type or range,
                or the settings file is invalid.
        """
        env = os.environ if environ is None else environ
        defaults = cls()
        hosts = env.get("TC_ALLOWED_HOSTS", "")
        state_dir = Path(env.get("TC_STATE_DIR") or defaults.state_dir)
        env_hosts = frozenset(
            h.strip().lower().rstrip(".") for h in hosts.split(",") if h.strip()
        )
        file_hosts = read_settings_file(state_dir)
        return cls(
            state_dir=state_dir,
            allowed_hosts=env_hosts | file_hosts,
            allowed_hosts_from_file=file_hosts - env_hosts,
            trigger_lookup_grace=_number(
                env, "TC_TRIGGER_LOOKUP_GRACE", defaults.trigger_lookup_grace, 0
            ),
            max_batch_ids=int(
                _number(env, "TC_MAX_BATCH_IDS", defaults.max_batch_ids, 1, True)
            ),
            concurrency=int(
                _number(env, "TC_CONCURRENCY", defaults.concurrency, 1, True)
            ),
            http_timeout=_number(env, "TC_HTTP_TIMEOUT", defaults.http_timeout, 0.1),
            retry_attempts=int(
                _number(env, "TC_RETRY_ATTEMPTS", defaults.retry_attempts, 1, True)
            ),
            retry_max_wait=_number(
                env, "TC_RETRY_MAX_WAIT", defaults.retry_max_wait, 0
            ),
            keboola_poll_seconds=_number(
                env, "TC_KEBOOLA_POLL_SECONDS", defaults.keboola_poll_seconds, 1
            ),
            poll_strategy=_strategy(env),
        )

    def with_overrides(self, **changes: Any) -> Settings:
        """Return a copy with the given fields replaced; None values are skipped.

        A new ``state_dir`` brings the allowed hosts of its own settings file
        in place of those of the old one.

        Raises:
            SettingsError: the new state directory's settings file is invalid.
        """
        given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        new_dir = given.get("state_dir")
        if new_dir is not None and Path(new_dir) != self.state_dir:
            base = given.get(
                "allowed_hosts", self.allowed_hosts - self.allowed_hosts_from_file
            )
            file_hosts = read_settings_file(Path(new_dir))
            given["allowed_hosts"] = base | file_hosts
            given["allowed_hosts_from_file"] = file_hosts - base
        return replace(self, **given)

    @property
    def database_path(self) -> Path:
        """Path of the SQLite state database inside the state directory."""
        return self.state_dir / "state.db"


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float,
    integer: bool = False,
) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        msg = f"{name}={raw!r} is not {kind}; set it to {kind} >= {minimum:g}"
        raise SettingsError(msg) from None
    if value < minimum:
        msg = f"{name}={raw!r} is below the minimum; set it to at least {minimum:g}"
        raise SettingsError(msg)
    return value


def _strategy(env: Mapping[str, str]) -> Literal["auto", "list", "get"]:
    raw = (env.get("TC_POLL_STRATEGY") or "auto").strip().lower()
    if raw not in ("auto", "list", "get"):
        msg = f"TC_POLL_STRATEGY={raw!r} is not one of auto, list, get"
        raise SettingsError(msg)
    return cast(Literal["auto", "list", "get"], raw)


def read_settings_file(state_dir: Path) -> frozenset[str]:
    """Return the allowed hosts of the settings file in ``state_dir``.

    A missing or empty file allows no extra host.

    Raises:
        SettingsError: the file is unreadable, not YAML, has duplicate or
            unknown keys, or ``allowed_hosts`` is not a list of host names.
    """
    path = state_dir / SETTINGS_FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return frozenset()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        msg = f"settings file {path} cannot be read ({reason})"
        raise SettingsError(msg) from None
    # The YAML parser is imported here because most state directories have
    # no settings file, so `tc status` usually starts without it.
    import yaml

    from reconciler.yaml_loader import compose_document, find_duplicate_keys

    try:
        data = yaml.safe_load(text)
        if data is None:
            return frozenset()
        problems = find_duplicate_keys(compose_document(text, path), path)
    except yaml.YAMLError as error:
        msg = f"settings file {path} is not valid YAML: {error}"
        raise SettingsError(msg) from None
    except JobFileError as error:
        raise SettingsError(f"settings file {error}") from None
    if problems:
        raise SettingsError(f"settings file {problems[0]}")
    if not isinstance(data, dict):
        msg = (
            f"settings file {path} must be a mapping, such as "
            "`allowed_hosts: [queue.example.com]`"
        )
        raise SettingsError(msg)
    unknown = sorted(str(key) for key in data if key != "allowed_hosts")
    if unknown:
        msg = (
            f"settings file {path} has the unknown key(s) {', '.join(unknown)}; "
            "the only key is allowed_hosts"
        )
        raise SettingsError(msg)
    return frozenset(_host_names(data.get("allowed_hosts"), path))


def _host_names(value: object, path: Path) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        msg = f"settings file {path}: allowed_hosts must be a list of host names"
        raise SettingsError(msg)
    hosts = []
    for item in value:
        host = item.strip().lower().rstrip(".") if isinstance(item, str) else ""
        if not host or any(ch in host for ch in "/@ ") or _has_port(host):
            msg = (
                f"settings file {path}: allowed_hosts entry {item!r} is not a "
                "host name; write the name alone, without scheme, port or path"
            )
            raise SettingsError(msg)
        hosts.append(host)
    return hosts


def _has_port(host: str) -> bool:
    """Tell whether ``host`` carries a port: a colon that is not part of IPv6."""
    if ":" not in host:
        return False
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return True
    return False
