"""The state database: setup, schema version, batches and claims."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from reconciler.errors import StoreError
from reconciler.store import EVENTS_KEPT_PER_JOB, SCHEMA_VERSION, Store


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


def _damage_batches_table(tmp_path: Path) -> None:
    """Fill the batches table over several pages, then scramble one of them."""
    store = Store.open(tmp_path)
    store.insert_job("a", path="a.yaml", revision="r", status="active")
    store.set_batch_ids("a", [f"batch_{i:04d}_{'x' * 40}" for i in range(400)])
    store.close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = [
        row[0]
        for row in conn.execute("SELECT pageno FROM dbstat WHERE name = 'batches'")
    ]
    conn.close()
    assert len(pages) > 2
    path = tmp_path / "state.db"
    data = bytearray(path.read_bytes())
    start = (pages[-1] - 1) * page_size
    for offset in range(start, start + page_size, 3):
        data[offset] = (data[offset] + 0x5A) % 256
    path.write_bytes(bytes(data))


def test_damaged_page_fails_the_quick_check(tmp_path: Path) -> None:
    _damage_batches_table(tmp_path)

    with pytest.raises(StoreError, match="is damaged"):
        Store.open(tmp_path)


def test_unchecked_read_of_damaged_page_raises(tmp_path: Path) -> None:
    _damage_batches_table(tmp_path)
    store = Store.open(tmp_path, create=False, check=False)

    try:
        with pytest.raises(StoreError, match="is damaged") as caught:
            store.all_batches()
    finally:
        store.close()
    assert "restore it from a backup" in str(caught.value)


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


def test_prune_keeps_newest_events(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        for name in ("a", "b"):
            store.insert_job(name, path=f"{name}.yaml", revision="r", status="active")
        for i in range(EVENTS_KEPT_PER_JOB + 5):
            store.add_event("a", "batch", f"event {i}")
        store.add_event("b", "batch", "only one")
        store.prune_events()
        kept = store.events("a", limit=1000)
        assert len(kept) == EVENTS_KEPT_PER_JOB
        assert kept[-1].message == f"event {EVENTS_KEPT_PER_JOB + 4}"
        assert kept[0].message == "event 5"
        assert [e.message for e in store.events("b")] == ["only one"]
    finally:
        store.close()


def test_update_job_writes_fields(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        store.insert_job("a", path="a.yaml", revision="r", status="active")
        store.update_job("a", status="paused", spec={"batch_ids": ["batch_x"]})
        row = store.job("a")
        assert row is not None
        assert row.status == "paused"
        assert row.spec == {"batch_ids": ["batch_x"]}
    finally:
        store.close()


def test_json_column_with_huge_integer_reads_back(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.insert_job("a", path="a.yaml", revision="r", status="active")
    store.set_batch_ids("a", ["batch_1", "batch_2"])
    huge = 2**70 + 1
    store.update_batch("a", "batch_1", request_counts={"total": huge})
    store.update_batch("a", "batch_2", request_counts={"total": 3})

    batches = store.batches("a")

    assert [b.request_counts for b in batches] == [{"total": huge}, {"total": 3}]
