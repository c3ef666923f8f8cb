"""Storage faults: a locked, damaged, read-only or full state, old schemas, kills.

Each fault must end `tc` with one clear error and exit code 1, and leave the
job files, the status files and the existing database as they were.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from reliability_support import (
    COMPONENT,
    CONFIGURATION_ID,
    STATUS_FILE_KEYS,
    Workspace,
    assert_clean_exit,
    limit_file_size,
    obey_file_permissions,
    scenario,
    terminal,
)

from reconciler.spec import load_job_file
from reconciler.store import BUSY_TIMEOUT_SECONDS, SCHEMA_VERSION

StartWorkspace = Callable[..., Workspace]

JOBS = ("alpha", "beta", "gamma")


def _settled_workspace(start: StartWorkspace) -> Workspace:
    """Return a workspace whose three jobs have been triggered and followed."""
    batches = {f"batch_{name}": terminal() for name in JOBS}
    batches["batch_new"] = terminal()
    ws = start(scenario(batches))
    for name in JOBS:
        ws.write_job(name, [f"batch_{name}"])
    ws.apply_until(
        lambda: (
            all(t["keboola_finished"] for t in ws.triggers().values())
            and len(ws.triggers()) == len(JOBS)
        )
    )
    _checkpoint(ws.database)
    return ws


def _checkpoint(database: Path) -> None:
    """Move the WAL into the database file, so its bytes are the whole state."""
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _snapshot(ws: Workspace) -> dict[str, bytes]:
    """Return the bytes of the files under the job and state directories.

    SQLite's WAL and shared-memory files are left out, because any connection
    (also a read-only one) may create them; ``_dump`` compares the content.
    """
    files = {}
    for directory in (ws.job_dir, ws.state_dir):
        for path in sorted(directory.rglob("*")):
            if path.name == "status.lock" or path.name.endswith(("-wal", "-shm")):
                continue
            if path.is_file():
                files[str(path.relative_to(ws.root))] = path.read_bytes()
    return files


def _dump(database: Path) -> list[str]:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return list(conn.iterdump())


def _assert_untouched(ws: Workspace, before: dict[str, bytes]) -> None:
    after = _snapshot(ws)
    assert set(after) - set(before) == set()
    for name, data in before.items():
        assert after.get(name) == data, f"{name} changed"


@contextmanager
def _write_lock(database: Path) -> Iterator[sqlite3.Connection]:
    """Hold SQLite's write lock on the database from another connection."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


# Locks


def test_locked_database_fails_cleanly(workspace: StartWorkspace) -> None:
    ws = _settled_workspace(workspace)
    ws.write_job("delta", ["batch_new"])
    posts_before = ws.count("keboola", "POST")
    before = _snapshot(ws)
    dump_before = _dump(ws.database)

    with _write_lock(ws.database):
        run = ws.apply()

    assert_clean_exit(run)
    assert run.returncode == 1
    assert "is locked by another process" in run.stderr
    assert run.seconds >= BUSY_TIMEOUT_SECONDS
    assert ws.count("keboola", "POST") == posts_before
    assert _dump(ws.database) == dump_before
    _assert_untouched(ws, before)


def test_status_reads_during_write_lock(workspace: StartWorkspace) -> None:
    ws = _settled_workspace(workspace)

    with _write_lock(ws.database):
        run = ws.tc("status", "-o", "json")

    assert run.returncode == 0, run.describe()
    assert run.seconds < BUSY_TIMEOUT_SECONDS
    assert {job["job"] for job in json.loads(run.stdout)} == set(JOBS)


def test_parallel_first_applies_both_succeed(workspace: StartWorkspace) -> None:
    ws = workspace(scenario({f"batch_{name}": terminal() for name in JOBS}))
    first = ws.apply()
    assert first.returncode == 0, first.describe()
    for name in JOBS:
        ws.write_job(name, [f"batch_{name}"])

    # Both processes read the empty jobs table and plan to create every job.
    # Then they wait for the write lock, and once it is released they insert
    # one after the other.
    with _write_lock(ws.database):
        processes = [ws.start_apply(), ws.start_apply()]
        time.sleep(4)
    outputs = [process.communicate(timeout=60) for process in processes]

    assert ws.keboola_jobs_per_job() == {name: 1 for name in JOBS}
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert "Traceback" not in stderr, stderr
        assert "UNIQUE constraint failed" not in stderr, stderr
        assert process.returncode == 0, f"{stdout}\n{stderr}"


def test_lock_during_trigger_step(workspace: StartWorkspace) -> None:
    lost_answer = {
        "service": "keboola",
        "method": "POST",
        "path": "^/jobs$",
        "times": 1,
        "after_commit": {"drop": True},
    }
    ws = workspace(scenario({"batch_alpha": terminal()}, faults=[lost_answer]))
    ws.write_job("alpha", ["batch_alpha"])
    ws.apply()
    assert ws.triggers()["alpha"]["state"] == "unknown"
    # The search is slow, within the HTTP timeout, so that the lock can be
    # taken while it runs, before the job it finds is recorded.
    ws.sim.add_faults(
        {"service": "keboola", "path": "^/search/jobs$", "latency": 0.5, "times": 1}
    )

    process = ws.start_apply()
    deadline = time.monotonic() + 20
    while not ws.requests("keboola", "GET", "^/search/jobs$"):
        assert time.monotonic() < deadline, "the search never started"
        time.sleep(0.05)
    with _write_lock(ws.database):
        time.sleep(BUSY_TIMEOUT_SECONDS + 2)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 1, f"{stdout}\n{stderr}"
    assert "is locked by another process" in stderr
    assert "Traceback" not in stderr, stderr
    assert len(ws.sim.keboola_jobs()) == 1


# Damaged files


def _garbage(database: Path) -> None:
    database.write_bytes(b"this is not an SQLite database\n" * 100)


def _damaged_page(database: Path) -> None:
    data = bytearray(database.read_bytes())
    # Page 2 contains the start of the first table's b-tree.
    for offset in range(4096 + 8, 8192, 7):
        data[offset] = (data[offset] + 0x5A) % 256
    database.write_bytes(bytes(data))


def _truncated(database: Path) -> None:
    data = database.read_bytes()
    database.write_bytes(data[: len(data) // 2 + 100])


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_garbage, "is not a valid SQLite database"),
        (_damaged_page, "is damaged"),
        (_truncated, "state database"),
    ],
    ids=["not-sqlite", "damaged-page", "truncated"],
)
def test_damaged_database_fails_cleanly(
    workspace: StartWorkspace, damage: Callable[[Path], None], words: str
) -> None:
    ws = _settled_workspace(workspace)
    damage(ws.database)
    posts_before = ws.count("keboola", "POST")
    before = _snapshot(ws)

    for args in (("apply", str(ws.job_dir)), ("status",)):
        run = ws.tc(*args)

        assert_clean_exit(run)
        assert run.returncode == 1
        assert words in run.stderr
        assert "triggers every finished job again" in run.stderr
    assert ws.count("keboola", "POST") == posts_before
    _assert_untouched(ws, before)


# Read-only and full


def test_read_only_state_directory(workspace: StartWorkspace) -> None:
    ws = _settled_workspace(workspace)
    ws.write_job("delta", ["batch_new"])
    before = _snapshot(ws)
    ws.state_dir.chmod(0o555)
    try:
        run = ws.apply(preexec_fn=obey_file_permissions)
    finally:
        ws.state_dir.chmod(0o755)

    assert_clean_exit(run)
    assert run.returncode == 1
    assert "read-only" in run.stderr
    assert "make its directory writable" in run.stderr
    assert ws.count("keboola", "POST", "^/jobs$") == len(JOBS)
    _assert_untouched(ws, before)


def test_read_only_job_directory(workspace: StartWorkspace) -> None:
    ws = workspace(scenario({f"batch_{name}": terminal() for name in JOBS}))
    for name in JOBS:
        ws.write_job(name, [f"batch_{name}"])
    ws.job_dir.chmod(0o555)
    try:
        run = ws.apply(preexec_fn=obey_file_permissions)
    finally:
        ws.job_dir.chmod(0o755)

    assert_clean_exit(run)
    assert run.returncode == 1
    assert "status file" in run.stderr
    assert ws.keboola_jobs_per_job() == {name: 1 for name in JOBS}


def test_full_disk_fails_cleanly(workspace: StartWorkspace) -> None:
    ws = _settled_workspace(workspace)
    for index in range(20):
        ws.write_job(f"extra-{index:02d}", ["batch_new"])
    rows_before = _dump(ws.database)
    size = ws.database.stat().st_size
    status_before = {name: ws.status_path(name).read_bytes() for name in JOBS}

    run = ws.apply(preexec_fn=limit_file_size(size + 4096))

    assert_clean_exit(run)
    assert run.returncode == 1
    assert "cannot be written" in run.stderr
    assert "free space" in run.stderr
    with closing(sqlite3.connect(ws.database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Jobs created before the file reached its limit stay, each in its own
    # committed transaction; every row from before is still there.
    assert set(rows_before) <= set(_dump(ws.database))
    assert ws.count("keboola", "POST", "^/jobs$") == len(JOBS)
    for name in JOBS:
        assert ws.status_path(name).read_bytes() == status_before[name]


def test_lost_database_no_second_trigger(workspace: StartWorkspace) -> None:
    ws = _settled_workspace(workspace)
    ws.state_dir.rename(ws.root / "state-lost")

    run = ws.apply()

    assert_clean_exit(run)
    assert ws.keboola_jobs_per_job() == {name: 1 for name in JOBS}


# Schema versions


V1_SCHEMA = """
CREATE TABLE "meta" ("key" TEXT PRIMARY KEY, "value" TEXT);
CREATE TABLE "jobs" (
   "name" TEXT PRIMARY KEY, "path" TEXT NOT NULL, "revision" TEXT NOT NULL,
   "spec" TEXT, "spec_revision" TEXT, "file_error" TEXT, "status" TEXT NOT NULL,
   "error_message" TEXT, "error_since" TEXT, "trigger_id" TEXT,
   "trigger_not_before" TEXT, "last_checked_at" TEXT, "next_check_at" TEXT,
   "created_at" TEXT NOT NULL, "updated_at" TEXT NOT NULL
);
CREATE TABLE "batches" (
   "job" TEXT REFERENCES "jobs"("name"), "batch_id" TEXT, "position" INTEGER,
   "status" TEXT, "request_counts" TEXT, "output_file_id" TEXT,
   "error_file_id" TEXT, "terminal_at" TEXT, "error" TEXT, "polled_at" TEXT,
   PRIMARY KEY ("job", "batch_id")
);
CREATE TABLE "triggers" (
   "id" TEXT PRIMARY KEY, "job" TEXT NOT NULL, "revision" TEXT,
   "batch_ids" TEXT, "target" TEXT, "state" TEXT NOT NULL,
   "claimed_at" TEXT NOT NULL, "sent_at" TEXT, "lease_until" TEXT,
   "attempts" INTEGER DEFAULT 0, "keboola_job_id" TEXT, "keboola_status" TEXT,
   "keboola_message" TEXT, "keboola_finished" INTEGER DEFAULT 0,
   "keboola_checked_at" TEXT, "parameters" TEXT, "last_error" TEXT,
   "superseded" INTEGER DEFAULT 0
);
CREATE INDEX "idx_triggers_job" ON "triggers" ("job");
CREATE TABLE "events" (
   "id" INTEGER PRIMARY KEY, "job" TEXT NOT NULL, "at" TEXT NOT NULL,
   "kind" TEXT NOT NULL, "message" TEXT NOT NULL
);
CREATE INDEX "idx_events_job_id" ON "events" ("job", "id");
INSERT INTO meta VALUES ('schema_version', '1');
"""
LEGACY_TRIGGER = "tct-0123456789abcdef0123456789abcdef"
LEGACY_KEBOOLA_JOB = "990001"
WHEN = "2026-01-05T10:00:00Z"


def _write_v1_database(ws: Workspace, job_path: Path) -> None:
    """Write a schema version 1 database in which the job's trigger was accepted."""
    loaded = load_job_file(job_path)
    assert loaded.spec is not None
    parameters = {
        "batch_ids_completed": '["batch_legacy"]',
        "batch_ids_failed": "[]",
        "batch_count_total": "1",
        "batch_count_completed": "1",
        "batch_count_failed": "0",
        "teckochecker_trigger_id": LEGACY_TRIGGER,
        "teckochecker_job": "legacy",
    }
    target = {
        "queue_url": ws.url,
        "component_id": COMPONENT,
        "configuration_id": CONFIGURATION_ID,
    }
    ws.state_dir.mkdir(parents=True)
    with closing(sqlite3.connect(ws.database)) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute(
            "INSERT INTO jobs (name, path, revision, spec, spec_revision, status, "
            "trigger_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                "legacy",
                str(job_path),
                loaded.revision,
                json.dumps(loaded.spec.model_dump(mode="json")),
                loaded.revision,
                "completed",
                LEGACY_TRIGGER,
                WHEN,
                WHEN,
            ],
        )
        conn.execute(
            "INSERT INTO batches (job, batch_id, position, status, request_counts, "
            "output_file_id, terminal_at, polled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                "legacy",
                "batch_legacy",
                0,
                "completed",
                json.dumps({"total": 10, "completed": 10, "failed": 0}),
                "file-legacy-output",
                WHEN,
                WHEN,
            ],
        )
        conn.execute(
            "INSERT INTO triggers (id, job, revision, batch_ids, target, state, "
            "claimed_at, sent_at, attempts, keboola_job_id, keboola_status, "
            "keboola_finished, keboola_checked_at, parameters) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                LEGACY_TRIGGER,
                "legacy",
                loaded.revision,
                json.dumps(["batch_legacy"]),
                json.dumps(target),
                "accepted",
                WHEN,
                WHEN,
                1,
                LEGACY_KEBOOLA_JOB,
                "success",
                1,
                WHEN,
                json.dumps(parameters),
            ],
        )
        conn.execute(
            "INSERT INTO events (job, at, kind, message) VALUES (?, ?, ?, ?)",
            ["legacy", WHEN, "trigger", f"trigger {LEGACY_TRIGGER} accepted"],
        )
        conn.commit()


def test_version_one_database_migrates(workspace: StartWorkspace) -> None:
    ws = workspace(scenario({"batch_legacy": terminal()}))
    job_path = ws.write_job("legacy", ["batch_legacy"])
    _write_v1_database(ws, job_path)

    run = ws.apply()

    assert run.returncode == 0, run.describe()
    assert ws.count("keboola", "POST") == 0
    assert ws.count("openai") == 0
    versions = ws.query("SELECT value FROM meta WHERE key = 'schema_version'")
    assert versions == [{"value": str(SCHEMA_VERSION)}]
    with closing(sqlite3.connect(ws.database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    job = ws.status_json()["legacy"]
    assert job["status"] == "completed"
    assert job["trigger"]["id"] == LEGACY_TRIGGER
    assert job["trigger"]["keboola_job_id"] == LEGACY_KEBOOLA_JOB
    assert job["batches"][0]["output_file_id"] == "file-legacy-output"
    document = yaml.safe_load(ws.status_path("legacy").read_text(encoding="utf-8"))
    assert document == {key: job[key] for key in document}


# Status files


def _kill_status_write(ws: Workspace) -> tuple[Path, bytes]:
    """Change a job, kill `tc` as it renames the new status file into place."""
    path = ws.status_path("alpha")
    old = path.read_bytes()
    ws.write_job("alpha", ["batch_alpha", "batch_new"])
    run = ws.apply(failpoint="status.renaming:1")
    assert run.killed, run.describe()
    return path, old


def test_killed_status_write_keeps_old(workspace: StartWorkspace) -> None:
    ws = _settled_workspace(workspace)

    path, old = _kill_status_write(ws)

    assert path.read_bytes() == old
    temporary = list(ws.job_dir.glob(".alpha.status.yaml.*.tmp"))
    assert len(temporary) == 1
    new = yaml.safe_load(temporary[0].read_text(encoding="utf-8"))
    assert [b["id"] for b in new["batches"]] == ["batch_alpha", "batch_new"]

    run = ws.apply()

    assert_clean_exit(run)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert [b["id"] for b in document["batches"]] == ["batch_alpha", "batch_new"]


def test_killed_status_write_cleaned_up(workspace: StartWorkspace) -> None:
    ws = _settled_workspace(workspace)
    _kill_status_write(ws)

    run = ws.apply()

    assert_clean_exit(run)
    assert list(ws.job_dir.glob(".*.tmp")) == []


def test_status_file_never_mixed(workspace: StartWorkspace) -> None:
    """Read only whole status files while writes are killed and finished."""
    ws = _settled_workspace(workspace)
    path = ws.status_path("alpha")
    seen: set[bytes] = set()
    stop = threading.Event()

    def read_continuously() -> None:
        while not stop.is_set():
            seen.add(path.read_bytes())
            time.sleep(0.001)

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for count in range(1, 4):
            batch_ids = ["batch_alpha", "batch_new"][: 1 + count % 2]
            ws.write_job("alpha", batch_ids)
            ws.apply(failpoint="status.renaming:1")
            ws.apply()
    finally:
        stop.set()
        reader.join()

    # The batch set changed three times, so at least the first and one newer
    # version were seen; each of them whole.
    assert len(seen) >= 2
    for data in seen:
        document: dict[str, Any] = yaml.safe_load(data.decode("utf-8"))
        assert tuple(document) == STATUS_FILE_KEYS
        assert document["job"] == "alpha"
