"""The state database: one SQLite file, reached only through this module.

The database runs in WAL mode with a busy timeout, so the daemon, ``tc apply``
and ``tc status`` can use it at the same time. Its schema carries a version
and migrates itself forward when opened.

Tables:

- ``meta``: key and value pairs, among them ``schema_version``;
- ``jobs``: one row per job: the last valid spec and its revision, the
  current file's revision and validation error, status, error, the current
  trigger and the check times;
- ``batches``: one row per batch of a job, in job-file order, with the latest
  OpenAI fields that matter;
- ``triggers``: every trigger ever claimed, current or superseded;
- ``events``: the history of each job (status changes, triggers, errors);
- ``secrets``: the encrypted secret store, one Fernet token per name (from
  schema version 2). This module stores ciphertexts only; ``secrets`` encrypts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import logging

    import sqlite_utils

from reconciler.errors import StoreError
from reconciler.timeutil import to_iso, utc_now

SCHEMA_VERSION = 4
BUSY_TIMEOUT_SECONDS = 10.0
EVENTS_KEPT_PER_JOB = 200
# The meta key of the fingerprint that lets a cycle be skipped (``settled``).
SETTLED_KEY = "settled_fingerprint"

# Values of triggers.superseded: why a trigger is no longer the current one.
SUPERSEDED_BY_CHANGE = 1  # the batch set or the Keboola target changed
SUPERSEDED_BY_RERUN = 2  # tc rerun asked for a new trigger

GITIGNORE_TEXT = (
    "# Created by TeckoChecker: the state directory is never committed.\n*\n"
)

# The rows that commands read by the thousand are named tuples: immutable
# snapshots like frozen dataclasses, which took five times as long to build
# and a millisecond each to define, both paid by every `tc status`.


class JobRow(NamedTuple):
    """A job as the state database records it."""

    name: str
    path: str
    revision: str
    spec: dict[str, Any] | None
    spec_revision: str | None
    file_error: str | None
    status: str
    error_message: str | None
    error_since: str | None
    trigger_id: str | None
    trigger_not_before: str | None
    last_checked_at: str | None
    next_check_at: str | None
    created_at: str
    updated_at: str
    status_digest: str | None = None


class BatchRow(NamedTuple):
    """One batch of one job, with the latest fields OpenAI reported."""

    job: str
    batch_id: str
    position: int
    status: str | None
    request_counts: dict[str, int | None] | None
    output_file_id: str | None
    error_file_id: str | None
    terminal_at: str | None
    error: str | None
    polled_at: str | None
    created_at: int | None = None


class TriggerRow(NamedTuple):
    """One claimed trigger of a job.

    ``state`` is ``sending`` while one process owns the send (until
    ``lease_until``), ``unknown`` when the send's outcome is not known,
    ``accepted`` or ``rejected``.
    """

    id: str
    job: str
    revision: str | None
    batch_ids: list[str]
    target: dict[str, str]
    state: str
    claimed_at: str
    sent_at: str | None
    lease_until: str | None
    attempts: int
    keboola_job_id: str | None
    keboola_status: str | None
    keboola_message: str | None
    keboola_finished: bool
    keboola_checked_at: str | None
    parameters: dict[str, str]
    last_error: str | None
    superseded: int  # 0 when current or never superseded; see SUPERSEDED_BY_*


class EventRow(NamedTuple):
    """One entry of a job's history."""

    job: str
    at: str
    kind: str
    message: str


@dataclass(frozen=True)
class SecretRow:
    """One entry of the secret store: a name, an optional type and a Fernet token.

    ``type`` is ``openai``, ``keboola`` or None. The ciphertext is left out of
    the repr so that a logged row shows no token, even an encrypted one.
    """

    name: str
    type: str | None
    ciphertext: str = field(repr=False)
    created_at: str
    updated_at: str


_JSON_COLUMNS = {"spec", "request_counts", "batch_ids", "target", "parameters"}
_BOOL_COLUMNS = {"keboola_finished"}


@dataclass(frozen=True)
class _Reader:
    """How the rows of one table become instances of its row class.

    ``names`` lists the table's columns in the order of the class's fields,
    so that each fetched tuple becomes an instance positionally.
    ``conversions`` lists (position, True) for a JSON column and
    (position, False) for a boolean one.
    """

    table: str
    names: tuple[str, ...]
    conversions: tuple[tuple[int, bool], ...]

    def columns(self, skip: Sequence[str] = ()) -> str:
        """Return the SELECT list, with NULL in place of the ``skip`` columns."""
        return ", ".join(
            "NULL" if name in skip else f"{self.table}.{name}" for name in self.names
        )


def _reader(table: str, names: Sequence[str]) -> _Reader:
    conversions = tuple(
        (i, name in _JSON_COLUMNS)
        for i, name in enumerate(names)
        if name in _JSON_COLUMNS or name in _BOOL_COLUMNS
    )
    return _Reader(table, tuple(names), conversions)


_READERS: dict[type[Any], _Reader] = {
    JobRow: _reader("jobs", JobRow._fields),
    BatchRow: _reader("batches", BatchRow._fields),
    TriggerRow: _reader("triggers", TriggerRow._fields),
    EventRow: _reader("events", EventRow._fields),
    SecretRow: _reader("secrets", [f.name for f in fields(SecretRow)]),
}


def _rows_to(cls: type[Any], rows: Sequence[Sequence[Any]]) -> list[Any]:
    if not rows:
        return []
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    for position, is_json in _READERS[cls].conversions:
        if is_json:
            # One parse of the column as a JSON array costs a fraction of a
            # call per row.
            texts = ("null" if text is None else text for text in columns[position])
            columns[position] = json.loads("[" + ",".join(texts) + "]")
        else:
            columns[position] = [bool(value) for value in columns[position]]
    return [cls(*values) for values in zip(*columns, strict=True)]


def _to_columns(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key in _JSON_COLUMNS and value is not None:
            value = json.dumps(value, sort_keys=False)
        if key in _BOOL_COLUMNS:
            value = int(bool(value))
        out[key] = value
    return out


def _migrate_to_1(db: sqlite_utils.Database) -> None:
    db.table("jobs").create(
        {
            "name": str,
            "path": str,
            "revision": str,
            "spec": str,
            "spec_revision": str,
            "file_error": str,
            "status": str,
            "error_message": str,
            "error_since": str,
            "trigger_id": str,
            "trigger_not_before": str,
            "last_checked_at": str,
            "next_check_at": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="name",
        not_null={"path", "revision", "status", "created_at", "updated_at"},
    )
    db.table("batches").create(
        {
            "job": str,
            "batch_id": str,
            "position": int,
            "status": str,
            "request_counts": str,
            "output_file_id": str,
            "error_file_id": str,
            "terminal_at": str,
            "error": str,
            "polled_at": str,
        },
        pk=("job", "batch_id"),
        foreign_keys=[("job", "jobs", "name")],
    )
    db.table("triggers").create(
        {
            "id": str,
            "job": str,
            "revision": str,
            "batch_ids": str,
            "target": str,
            "state": str,
            "claimed_at": str,
            "sent_at": str,
            "lease_until": str,
            "attempts": int,
            "keboola_job_id": str,
            "keboola_status": str,
            "keboola_message": str,
            "keboola_finished": int,
            "keboola_checked_at": str,
            "parameters": str,
            "last_error": str,
            "superseded": int,
        },
        pk="id",
        not_null={"job", "state", "claimed_at"},
        defaults={"attempts": 0, "keboola_finished": 0, "superseded": 0},
    )
    db.table("triggers").create_index(["job"])
    db.table("events").create(
        {"id": int, "job": str, "at": str, "kind": str, "message": str},
        pk="id",
        not_null={"job", "at", "kind", "message"},
    )
    db.table("events").create_index(["job", "id"])


def _migrate_to_2(db: sqlite_utils.Database) -> None:
    db.table("secrets").create(
        {
            "name": str,
            "type": str,
            "ciphertext": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="name",
        not_null={"ciphertext", "created_at", "updated_at"},
    )


# Migration n turns a database of schema version n - 1 into version n.
def _migrate_to_3(db: sqlite_utils.Database) -> None:
    # List-mode polling stops paging once past a batch's creation time.
    db.table("batches").add_column("created_at", int)


def _migrate_to_4(db: sqlite_utils.Database) -> None:
    # What the job's status file was last rendered from, so that a quiet
    # cycle can skip rendering YAML for every job.
    db.table("jobs").add_column("status_digest", str)


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _migrate_to_1,
    2: _migrate_to_2,
    3: _migrate_to_3,
    4: _migrate_to_4,
}


class Store:
    """The state database of one state directory.

    Open it with ``Store.open``; every write happens inside ``transaction``,
    which takes SQLite's write lock at the start (``BEGIN IMMEDIATE``), so
    a read followed by a write in one transaction is atomic across processes.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._conn = conn
        self._db: sqlite_utils.Database | None = None
        self._depth = 0

    @property
    def db(self) -> sqlite_utils.Database:
        """The sqlite-utils view of the connection, used for writes and schema.

        Reads run plain SQL, so that a read-only command such as ``tc status``
        does not import sqlite-utils at all.
        """
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self._conn)
        return self._db

    def _fetch(
        self,
        cls: type[Any],
        where: str | None = None,
        params: Sequence[Any] = (),
        *,
        join: str = "",
        order_by: str | None = None,
        limit: int | None = None,
        skip: Sequence[str] = (),
    ) -> list[Any]:
        """Read rows of ``cls``'s table as instances of ``cls``.

        The columns in ``skip`` are not read; their fields are None.
        """
        reader = _READERS[cls]
        sql = f"SELECT {reader.columns(skip)} FROM {reader.table} {join}"
        if where:
            sql += f" WHERE {where}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            rows = self._conn.execute(sql, list(params)).fetchall()
        except sqlite3.Error as error:
            raise _store_error(self.path, error) from error
        return _rows_to(cls, rows)

    def _table_exists(self, table: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
        ).fetchone()
        return row is not None

    @classmethod
    def open(cls, state_dir: Path, *, create: bool = True, check: bool = True) -> Store:
        """Open (and if needed create and migrate) the database in ``state_dir``.

        ``check`` runs SQLite's quick check, which reads every page, before
        anything else. A command that only reads can skip it: a damaged page
        then raises StoreError when a read reaches it.

        Raises:
            StoreError: the directory cannot be created, the file is not a
                SQLite database, or it is locked beyond the busy timeout.
        """
        path = state_dir / "state.db"
        if not create and not path.exists():
            msg = f"no state database at {path}; run `tc apply` first"
            raise StoreError(msg)
        try:
            _prepare_state_dir(state_dir)
            conn = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
        except OSError as error:
            msg = f"cannot create the state directory {state_dir}: {error.strerror}"
            raise StoreError(msg) from error
        except sqlite3.Error as error:
            raise _store_error(path, error) from error
        store = cls(conn, path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if check:
                _check_integrity(conn, path)
            store._migrate()
        except sqlite3.Error as error:
            conn.close()
            raise _store_error(path, error) from error
        except StoreError:
            conn.close()
            raise
        return store

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one write transaction; nested blocks join the outer one.

        Raises:
            StoreError: the database is locked beyond the busy timeout or
                cannot be written.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise _store_error(self.path, error) from error
        self._depth = 1
        try:
            yield
        except BaseException as error:
            self._depth = 0
            self._rollback()
            if isinstance(error, sqlite3.Error):
                raise _store_error(self.path, error) from error
            raise
        self._depth = 0
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            raise _store_error(self.path, error) from error

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not done so already.

        After some errors, such as a full disk, SQLite rolls the transaction
        back by itself. Another ROLLBACK would then raise and hide the error
        that caused it, so a failing rollback is only logged.
        """
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as error:
            _log().warning(
                "Rolling back a transaction on %s failed: %s", self.path, error
            )

    def _migrate(self) -> None:
        # Most opens find the schema current. Checking that without the write
        # lock lets `tc status` read while another process holds the lock.
        if self._table_exists("meta") and self.schema_version == SCHEMA_VERSION:
            return
        with self.transaction():
            if not self._table_exists("meta"):
                self.db.table("meta").create({"key": str, "value": str}, pk="key")
            version = int(self._meta("schema_version") or 0)
            if version > SCHEMA_VERSION:
                msg = (
                    f"state database {self.path} has schema version {version}, "
                    f"newer than this TeckoChecker ({SCHEMA_VERSION}); upgrade tc"
                )
                raise StoreError(msg)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](self.db)
                self._set_meta("schema_version", str(target))
                _log().info("State database migrated to schema version %d", target)

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute(
            "SELECT value FROM meta WHERE key = ?", [key]
        ).fetchone()
        return str(row[0]) if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.table("meta").upsert({"key": key, "value": value}, pk="key")

    def settled_fingerprint(self) -> str | None:
        """Return the fingerprint of the last cycle that left nothing to do."""
        return self._meta(SETTLED_KEY)

    def set_settled_fingerprint(self, fingerprint: str | None) -> None:
        """Record the fingerprint of a settled cycle, or clear it with None."""
        with self.transaction():
            if fingerprint is None:
                self._conn.execute("DELETE FROM meta WHERE key = ?", [SETTLED_KEY])
            else:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [SETTLED_KEY, fingerprint],
                )

    @property
    def schema_version(self) -> int:
        """The schema version the database is at."""
        return int(self._meta("schema_version") or 0)

    # Jobs

    def jobs(self, *, with_spec: bool = True) -> dict[str, JobRow]:
        """Return every job, by name; without the spec (None) if not ``with_spec``.

        The spec is the largest column, and what only a cycle reads.
        """
        skip = () if with_spec else ("spec",)
        rows = self._fetch(JobRow, order_by="name", skip=skip)
        return {row.name: row for row in rows}

    def job(self, name: str) -> JobRow | None:
        """Return one job, or None."""
        rows = self._fetch(JobRow, "name = ?", [name])
        return rows[0] if rows else None

    def insert_job(self, name: str, **values: Any) -> None:
        """Insert a new job row."""
        now = to_iso(utc_now())
        record = {"name": name, "created_at": now, "updated_at": now, **values}
        self.db.table("jobs").insert(_to_columns(record))

    def update_job(self, name: str, **values: Any) -> None:
        """Update fields of a job row."""
        values["updated_at"] = to_iso(utc_now())
        self._update("jobs", "name = ?", [name], values)

    def _update(
        self, table: str, where: str, keys: list[Any], values: dict[str, Any]
    ) -> None:
        # Plain UPDATE: sqlite-utils' update() reads the row first, which
        # doubles the statements of a poll that records thousands of batches.
        columns = _to_columns(values)
        assignments = ", ".join(f"[{column}] = ?" for column in columns)
        sql = f"UPDATE [{table}] SET {assignments} WHERE {where}"
        try:
            self._conn.execute(sql, [*columns.values(), *keys])
        except sqlite3.Error as error:
            raise _store_error(self.path, error) from error

    def delete_job(self, name: str) -> None:
        """Delete a job with its batches, triggers and events."""
        with self.transaction():
            for table in ("batches", "triggers", "events"):
                self.db.table(table).delete_where("job = ?", [name])
            self.db.table("jobs").delete_where("name = ?", [name])

    # Batches

    def batches(self, job: str) -> list[BatchRow]:
        """Return a job's batches in job-file order."""
        rows: list[BatchRow] = self._fetch(
            BatchRow, "job = ?", [job], order_by="position"
        )
        return rows

    def batch(self, job: str, batch_id: str) -> BatchRow | None:
        """Return one batch of one job, or None."""
        rows = self._fetch(BatchRow, "job = ? AND batch_id = ?", [job, batch_id])
        return rows[0] if rows else None

    def all_batches(self) -> dict[str, list[BatchRow]]:
        """Return every job's batches, by job name, each list in job-file order."""
        result: dict[str, list[BatchRow]] = {}
        for row in self._fetch(BatchRow, order_by="job, position"):
            result.setdefault(row.job, []).append(row)
        return result

    def set_batch_ids(self, job: str, batch_ids: list[str]) -> None:
        """Make a job track exactly ``batch_ids``, in that order.

        Batches already tracked keep what was seen of them; new ones start
        unknown; batches no longer listed are dropped.
        """
        with self.transaction():
            table = self.db.table("batches")
            known = {row["batch_id"] for row in table.rows_where("job = ?", [job])}
            for gone in known - set(batch_ids):
                table.delete_where("job = ? AND batch_id = ?", [job, gone])
            for position, batch_id in enumerate(batch_ids):
                if batch_id in known:
                    table.update((job, batch_id), {"position": position})
                else:
                    table.insert(
                        {"job": job, "batch_id": batch_id, "position": position}
                    )

    def update_batch(self, job: str, batch_id: str, **values: Any) -> None:
        """Update fields of one batch of one job."""
        self._update("batches", "job = ? AND batch_id = ?", [job, batch_id], values)

    # Triggers

    def trigger(self, trigger_id: str) -> TriggerRow | None:
        """Return one trigger, or None."""
        rows = self._fetch(TriggerRow, "id = ?", [trigger_id])
        return rows[0] if rows else None

    def current_triggers(self) -> dict[str, TriggerRow]:
        """Return each job's current trigger, by job name, in one query."""
        rows = self._fetch(
            TriggerRow, join="JOIN jobs ON jobs.trigger_id = triggers.id"
        )
        return {row.job: row for row in rows}

    def restorable_trigger(
        self, job: str, batch_ids: Sequence[str], target: dict[str, str]
    ) -> TriggerRow | None:
        """Return the newest accepted trigger that a job file change superseded
        and that went to this batch set and target, or None."""
        rows: list[TriggerRow] = self._fetch(
            TriggerRow,
            "job = ? AND superseded = ? AND state = 'accepted'",
            [job, SUPERSEDED_BY_CHANGE],
            order_by="claimed_at DESC",
        )
        for trigger in rows:
            if set(trigger.batch_ids) == set(batch_ids) and trigger.target == target:
                return trigger
        return None

    def restore_trigger(self, job: str, trigger_id: str) -> bool:
        """Make a superseded trigger the job's current one again, if it has none.

        Returns:
            True when the trigger was restored.
        """
        with self.transaction():
            row = self.job(job)
            if row is None or row.trigger_id is not None:
                return False
            self._update("triggers", "id = ?", [trigger_id], {"superseded": 0})
            self.update_job(job, trigger_id=trigger_id, trigger_not_before=None)
            return True

    def claim_trigger(self, job: str, trigger: dict[str, Any]) -> bool:
        """Record ``trigger`` as the job's current one, unless the job has one.

        The check and the write happen in one write transaction, so of several
        processes claiming at once exactly one wins.

        Returns:
            True when this call claimed the trigger.
        """
        with self.transaction():
            current = self.job(job)
            if current is None or current.trigger_id is not None:
                return False
            self.db.table("triggers").insert(_to_columns({"job": job, **trigger}))
            self.update_job(job, trigger_id=trigger["id"], trigger_not_before=None)
            return True

    def update_trigger(
        self, trigger_id: str, *, expect_state: str | None = None, **values: Any
    ) -> bool:
        """Update a trigger; with ``expect_state``, only if it is in that state.

        Returns:
            True when the row was updated.
        """
        with self.transaction():
            current = self.trigger(trigger_id)
            if current is None:
                return False
            if expect_state is not None and current.state != expect_state:
                return False
            self.db.table("triggers").update(trigger_id, _to_columns(values))
            return True

    def release_trigger(self, job: str, trigger_id: str, not_before: str) -> None:
        """Drop a claim whose request Keboola did not create (429)."""
        with self.transaction():
            self.db.table("triggers").delete_where("id = ?", [trigger_id])
            row = self.job(job)
            if row is not None and row.trigger_id == trigger_id:
                self.update_job(job, trigger_id=None, trigger_not_before=not_before)

    def disarm_trigger(self, job: str, *, rerun: bool = False) -> str | None:
        """Mark the job's current trigger superseded so a new one can be claimed.

        Args:
            job: the job name.
            rerun: the trigger is superseded on request (``tc rerun``), so it
                is never restored by ``restore_trigger``.

        Returns:
            The superseded trigger's id, or None when the job had none.
        """
        with self.transaction():
            row = self.job(job)
            if row is None or row.trigger_id is None:
                return None
            superseded = SUPERSEDED_BY_RERUN if rerun else SUPERSEDED_BY_CHANGE
            self._update(
                "triggers", "id = ?", [row.trigger_id], {"superseded": superseded}
            )
            self.update_job(job, trigger_id=None, trigger_not_before=None)
            return row.trigger_id

    # Events

    def add_event(self, job: str, kind: str, message: str) -> None:
        """Append an event to a job's history; ``prune_events`` trims it."""
        try:
            self._conn.execute(
                "INSERT INTO events (job, at, kind, message) VALUES (?, ?, ?, ?)",
                [job, to_iso(utc_now()), kind, message],
            )
        except sqlite3.Error as error:
            raise _store_error(self.path, error) from error

    def prune_events(self) -> None:
        """Keep only the newest ``EVENTS_KEPT_PER_JOB`` events of each job."""
        with self.transaction():
            self._conn.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM (SELECT id, "
                "ROW_NUMBER() OVER (PARTITION BY job ORDER BY id DESC) AS n "
                "FROM events) WHERE n > ?)",
                [EVENTS_KEPT_PER_JOB],
            )

    def events(self, job: str, limit: int = 20) -> list[EventRow]:
        """Return a job's newest events, oldest first."""
        rows = self._fetch(EventRow, "job = ?", [job], order_by="id desc", limit=limit)
        return list(reversed(rows))

    # ------------------------------------------------------------------------
    # Secrets. This section stores and returns ciphertexts only; the
    # ``reconciler.secrets`` module encrypts and decrypts them.

    def secrets(self) -> list[SecretRow]:
        """Return every stored secret, sorted by name."""
        rows: list[SecretRow] = self._fetch(SecretRow, order_by="name")
        return rows

    def secret(self, name: str) -> SecretRow | None:
        """Return one stored secret, or None."""
        rows = self._fetch(SecretRow, "name = ?", [name])
        return rows[0] if rows else None

    def put_secret(self, name: str, ciphertext: str, secret_type: str | None) -> bool:
        """Store a secret's ciphertext, replacing the one stored under ``name``.

        A replaced secret keeps its ``created_at``, and its type too when
        ``secret_type`` is None.

        Returns:
            True when the secret is new, False when it replaced one.
        """
        now = to_iso(utc_now())
        with self.transaction():
            current = self.secret(name)
            if current is None:
                self.db.table("secrets").insert(
                    {
                        "name": name,
                        "type": secret_type,
                        "ciphertext": ciphertext,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                return True
            values = {"ciphertext": ciphertext, "updated_at": now}
            if secret_type is not None:
                values["type"] = secret_type
            self.db.table("secrets").update(name, values)
            return False

    def delete_secret(self, name: str) -> bool:
        """Delete a stored secret.

        Returns:
            True when a secret of that name existed.
        """
        with self.transaction():
            if self.secret(name) is None:
                return False
            self.db.table("secrets").delete_where("name = ?", [name])
            return True

    def replace_secret_ciphertexts(self, reencrypt: Callable[[SecretRow], str]) -> int:
        """Replace the ciphertext of every secret in one write transaction.

        ``reencrypt`` receives each row and returns its new ciphertext. When it
        raises, the transaction is rolled back and every secret keeps its old
        ciphertext. Key rotation uses this; ``updated_at`` is left alone
        because the values do not change.

        Returns:
            The number of secrets rewritten.
        """
        with self.transaction():
            rows = self.secrets()
            for row in rows:
                self.db.table("secrets").update(
                    row.name, {"ciphertext": reencrypt(row)}
                )
            return len(rows)


def _log() -> logging.Logger:
    # Imported when a message is logged, which a plain read never does, so
    # that `tc status` starts without the logging package.
    import logging

    return logging.getLogger(__name__)


def _prepare_state_dir(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text(GITIGNORE_TEXT, encoding="utf-8")


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Raise StoreError when SQLite's quick check finds damaged pages.

    Without the check a damaged page surfaces later, in the middle of a
    cycle, wherever it is first read. The check reads every page once.
    """
    rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    result = str(rows[0][0]) if rows else "ok"
    if result != "ok":
        detail = " ".join(result.split())[:200]
        msg = f"state database {path} is damaged ({detail}); {_DAMAGED_ADVICE}"
        raise StoreError(msg)


# A new, empty database does not know which triggers were sent, so it would
# trigger every finished job again.
_DAMAGED_ADVICE = (
    "restore it from a backup or try `sqlite3 state.db .recover`; moving it "
    "aside makes the next run start a new database, which triggers every "
    "finished job again"
)


def _store_error(path: Path, error: sqlite3.Error) -> StoreError:
    text = str(error)
    if "locked" in text or "busy" in text:
        msg = (
            f"state database {path} is locked by another process for more than "
            f"{BUSY_TIMEOUT_SECONDS:g} s; try again, or look for a stuck tc process"
        )
    elif "not a database" in text:
        msg = (
            f"state database {path} is not a valid SQLite database ({text}); "
            f"{_DAMAGED_ADVICE}"
        )
    elif "malformed" in text:
        msg = f"state database {path} is damaged ({text}); {_DAMAGED_ADVICE}"
    elif "readonly" in text or "read-only" in text:
        msg = f"state database {path} is read-only; make its directory writable"
    elif "disk is full" in text or "disk I/O error" in text:
        msg = (
            f"state database {path} cannot be written ({text}); check the free "
            "space, the quota and the file size limit (ulimit -f) of its file system"
        )
    else:
        msg = f"state database {path} failed: {text}"
    return StoreError(msg)
