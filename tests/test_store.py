"""The state database: setup, schema version, batches and claims."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from reconciler.errors import StoreError
from reconciler.store import SCHEMA_VERSION, Store


def test_open_creates_gitignored_wal_db(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store.open(state)
    try:
        mode = store.db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        assert store.schema_version == SCHEMA_VERSION
    finally:
        store.close()
    assert (state / ".gitignore").read_text(encoding="utf-8").splitlines()[-1] == "*"


def test_reopen_keeps_data(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.insert_job("a", path="a.yaml", revision="r", status="active")
    store.close()
    again = Store.open(tmp_path)
    try:
        assert list(again.jobs()) == ["a"]
    finally:
        again.close()


def test_newer_schema_is_rejected(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="upgrade tc"):
        Store.open(tmp_path)


def test_not_sqlite_file_is_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a valid SQLite database"):
        Store.open(tmp_path)


def test_missing_database_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="run `tc apply` first"):
        Store.open(tmp_path, create=False)


def test_set_batch_ids_keeps_seen_state(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        store.insert_job("a", path="a.yaml", revision="r", status="active")
        store.set_batch_ids("a", ["batch_1", "batch_2"])
        store.update_batch("a", "batch_1", status="completed")
        store.set_batch_ids("a", ["batch_3", "batch_1"])
        rows = store.batches("a")
        assert [b.batch_id for b in rows] == ["batch_3", "batch_1"]
        assert rows[0].status is None
        assert rows[1].status == "completed"
    finally:
        store.close()


def test_second_claim_loses(tmp_path: Path) -> None:
    first = Store.open(tmp_path)
    second = Store.open(tmp_path)
    try:
        first.insert_job("a", path="a.yaml", revision="r", status="active")
        trigger = {"state": "sending", "claimed_at": "2026-01-01T00:00:00Z"}
        assert first.claim_trigger("a", {"id": "t1", **trigger}) is True
        assert second.claim_trigger("a", {"id": "t2", **trigger}) is False
        row = second.job("a")
        assert row is not None
        assert row.trigger_id == "t1"
        assert second.trigger("t2") is None
    finally:
        first.close()
        second.close()


def test_delete_job_removes_everything(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        store.insert_job("a", path="a.yaml", revision="r", status="active")
        store.set_batch_ids("a", ["batch_1"])
        store.add_event("a", "created", "hello")
        store.claim_trigger("a", {"id": "t1", "state": "sending", "claimed_at": "x"})
        store.delete_job("a")
        assert store.job("a") is None
        assert store.batches("a") == []
        assert store.events("a") == []
        assert store.trigger("t1") is None
    finally:
        store.close()
