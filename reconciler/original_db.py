"""The original TeckoChecker's SQLite database, read-only.

The original keeps its jobs in one of two schemas: single-batch, with a
``batch_id`` column on ``polling_jobs``, and multi-batch, with a
``job_batches`` table (``job_id``, ``batch_id``, ``status``). Both have a
``secrets`` table whose ``value`` is a Fernet token under the key
``urlsafe_b64encode(sha256(SECRET_KEY).digest())``. Timestamps are naive UTC,
as SQLAlchemy writes them.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from reconciler.errors import TCError
from reconciler.secrets import SecretKey
from reconciler.timeutil import to_iso

JOB_COLUMNS = (
    "id",
    "name",
    "openai_secret_id",
    "keboola_secret_id",
    "keboola_stack_url",
    "keboola_component_id",
    "keboola_configuration_id",
    "poll_interval_seconds",
    "status",
)
SECRET_COLUMNS = ("id", "name", "type", "value")
BATCH_COLUMNS = ("job_id", "batch_id", "status")
Schema = Literal["single-batch", "multi-batch"]


class ImportSourceError(TCError):
    """The original database cannot be read, or is not a TeckoChecker database."""


@dataclass(frozen=True)
class OriginalSecret:
    """A row of the original's ``secrets`` table; ``value`` is its Fernet token."""

    id: int
    name: str
    type: str | None
    value: str = field(repr=False)


@dataclass(frozen=True)
class OriginalBatch:
    """A batch of an original job, with the status the original recorded."""

    batch_id: str
    status: str | None
    completed_at: str | None = None


@dataclass(frozen=True)
class OriginalJob:
    """A row of the original's ``polling_jobs`` table, with its batches."""

    id: int
    name: str
    openai_secret_id: int | None
    keboola_secret_id: int | None
    stack_url: str
    component_id: str
    configuration_id: str
    poll_interval_seconds: int | None
    status: str
    batches: tuple[OriginalBatch, ...]
    completed_at: str | None = None


@dataclass(frozen=True)
class OriginalDatabase:
    """The jobs and secrets of an original TeckoChecker database."""

    path: Path
    schema: Schema
    jobs: list[OriginalJob]
    secrets: dict[int, OriginalSecret]


def read_original(path: Path) -> OriginalDatabase:
    """Read the jobs and secrets of an original TeckoChecker database, read-only.

    Raises:
        ImportSourceError: the file is missing, not SQLite, or lacks the
            tables and columns of either schema.
    """
    if not path.is_file():
        msg = (
            f"{path} does not exist or is not a file; give the path of teckochecker.db"
        )
        raise ImportSourceError(msg)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise ImportSourceError(f"{path} cannot be opened: {error}") from None
    try:
        conn.row_factory = sqlite3.Row
        return _read(conn, path)
    except sqlite3.DatabaseError as error:
        msg = f"{path} cannot be read as a SQLite database ({error})"
        raise ImportSourceError(msg) from None
    finally:
        conn.close()


def _read(conn: sqlite3.Connection, path: Path) -> OriginalDatabase:
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    for table in ("polling_jobs", "secrets"):
        if table not in tables:
            msg = f"{path} is not a TeckoChecker database: it has no {table} table"
            raise ImportSourceError(msg)
    job_columns = _columns(conn, "polling_jobs")
    _require(path, "polling_jobs", job_columns, JOB_COLUMNS)
    _require(path, "secrets", _columns(conn, "secrets"), SECRET_COLUMNS)
    schema: Schema = "multi-batch" if "job_batches" in tables else "single-batch"
    if schema == "multi-batch":
        batch_columns = _columns(conn, "job_batches")
        _require(path, "job_batches", batch_columns, BATCH_COLUMNS)
        batches = _read_batches(conn, batch_columns)
    elif "batch_id" not in job_columns:
        msg = (
            f"{path} is not a TeckoChecker database of a known schema: it has "
            "neither a job_batches table nor a polling_jobs.batch_id column"
        )
        raise ImportSourceError(msg)

    jobs = []
    for row in conn.execute("SELECT * FROM polling_jobs ORDER BY id"):
        values = dict(row)
        if schema == "multi-batch":
            job_batches = tuple(batches.get(values["id"], []))
        else:
            job_batches = _single_batch(values)
        jobs.append(
            OriginalJob(
                id=int(values["id"]),
                name=str(values["name"] or ""),
                openai_secret_id=values["openai_secret_id"],
                keboola_secret_id=values["keboola_secret_id"],
                stack_url=str(values["keboola_stack_url"] or ""),
                component_id=str(values["keboola_component_id"] or ""),
                configuration_id=str(values["keboola_configuration_id"] or ""),
                poll_interval_seconds=values["poll_interval_seconds"],
                status=str(values["status"] or ""),
                batches=job_batches,
                completed_at=_timestamp(values.get("completed_at")),
            )
        )
    secrets = {
        int(row["id"]): OriginalSecret(
            int(row["id"]), str(row["name"]), row["type"], str(row["value"] or "")
        )
        for row in conn.execute("SELECT id, name, type, value FROM secrets")
    }
    return OriginalDatabase(path, schema, jobs, secrets)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _require(
    path: Path, table: str, present: set[str], needed: tuple[str, ...]
) -> None:
    missing = [column for column in needed if column not in present]
    if missing:
        msg = (
            f"{path} is not a TeckoChecker database of a known schema: table "
            f"{table} has no column {', '.join(missing)}"
        )
        raise ImportSourceError(msg)


def _read_batches(
    conn: sqlite3.Connection, columns: set[str]
) -> dict[int, list[OriginalBatch]]:
    # The original lists a job's batches in the order they were added.
    order: list[str] = [c for c in ("created_at", "id") if c in columns]
    order = order or ["rowid"]
    completed = "completed_at" if "completed_at" in columns else "NULL"
    query = (
        f"SELECT job_id, batch_id, status, {completed} AS completed_at "
        f"FROM job_batches ORDER BY job_id, {', '.join(order)}"
    )
    result: dict[int, list[OriginalBatch]] = {}
    for row in conn.execute(query):
        batch = OriginalBatch(
            str(row["batch_id"]), row["status"], _timestamp(row["completed_at"])
        )
        result.setdefault(int(row["job_id"]), []).append(batch)
    return result


def _single_batch(values: dict[str, Any]) -> tuple[OriginalBatch, ...]:
    if not values.get("batch_id"):
        return ()
    # The single-batch original triggered Keboola only when the batch
    # completed, so only a completed job shows the batch's terminal status.
    status = "completed" if values.get("status") == "completed" else None
    completed_at = _timestamp(values.get("completed_at")) if status else None
    return (OriginalBatch(str(values["batch_id"]), status, completed_at),)


def _timestamp(value: object) -> str | None:
    """Return an original timestamp (SQLAlchemy writes naive UTC) as ISO 8601."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_iso(moment)


def original_key(secret_key: str) -> SecretKey:
    """Return the Fernet key of an original TeckoChecker with this ``SECRET_KEY``."""
    digest = hashlib.sha256(secret_key.encode("utf-8")).digest()
    return SecretKey(base64.urlsafe_b64encode(digest), source="--secret-key")
