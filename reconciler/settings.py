"""Settings of the reconciler, read from ``TC_*`` environment variables.

These are the operator's settings. Nothing in a job file can change them, which
matters for ``allowed_hosts``: it decides where tokens may be sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from reconciler.errors import SettingsError

DEFAULT_STATE_DIR = Path(".tc")


@dataclass(frozen=True)
class Settings:
    """The reconciler's settings.

    Attributes:
        state_dir: directory of the state database (``TC_STATE_DIR``).
        allowed_hosts: extra host names a token may be sent to, besides the
            vendors' own hosts (``TC_ALLOWED_HOSTS``, comma-separated).
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``TC_*`` variables; unset ones keep their default.

        Raises:
            SettingsError: a variable holds a value of the wrong type or range.
        """
        env = os.environ if environ is None else environ
        defaults = cls()
        hosts = env.get("TC_ALLOWED_HOSTS", "")
        return cls(
            state_dir=Path(env.get("TC_STATE_DIR") or defaults.state_dir),
            allowed_hosts=frozenset(
                h.strip().lower().rstrip(".") for h in hosts.split(",") if h.strip()
            ),
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
        """Return a copy with the given fields replaced; None values are skipped."""
        given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
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
