"""Unit tests of the fingerprint behind the settled shortcut."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from reconciler.plan import Plan
from reconciler.report import CycleReport
from reconciler.settings import Settings
from reconciler.settled import read_inputs, record
from reconciler.store import Store


def job_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "jobs.d"
    directory.mkdir()
    (directory / "a.yaml").write_text("batch_ids: [batch_1]\n", encoding="utf-8")
    (directory / "a.status.yaml").write_text("job: a\n", encoding="utf-8")
    return directory


def fingerprint(directory: Path, settings: Settings, store: Store) -> str | None:
    inputs = read_inputs(directory, settings, store.jobs().values())
    return None if inputs is None else inputs.fingerprint


def test_fingerprint_same_for_same_inputs(tmp_path: Path) -> None:
    directory = job_dir(tmp_path)
    settings = Settings(state_dir=tmp_path / "state")
    store = Store.open(settings.state_dir)

    first = fingerprint(directory, settings, store)

    assert first is not None
    assert fingerprint(directory, settings, store) == first


def test_fingerprint_changes_with_every_input(tmp_path: Path) -> None:
    directory = job_dir(tmp_path)
    settings = Settings(state_dir=tmp_path / "state")
    store = Store.open(settings.state_dir)
    seen = {fingerprint(directory, settings, store)}

    (directory / "a.yaml").write_text("batch_ids: [batch_2]\n", encoding="utf-8")
    seen.add(fingerprint(directory, settings, store))
    (directory / "a.status.yaml").write_text("job: b\n", encoding="utf-8")
    seen.add(fingerprint(directory, settings, store))
    (directory / "notes.txt").write_text("x", encoding="utf-8")
    seen.add(fingerprint(directory, settings, store))
    seen.add(fingerprint(directory, replace(settings, max_batch_ids=3), store))
    hosts = frozenset({"keboola.internal.test"})
    seen.add(fingerprint(directory, replace(settings, allowed_hosts=hosts), store))
    store.insert_job(
        "a", path="jobs.d/a.yaml", revision="r1", status="active", spec=None
    )
    seen.add(fingerprint(directory, settings, store))

    assert None not in seen
    assert len(seen) == 7


def test_fingerprint_none_with_symbolic_link(tmp_path: Path) -> None:
    directory = job_dir(tmp_path)
    settings = Settings(state_dir=tmp_path / "state")
    store = Store.open(settings.state_dir)
    (directory / "b.yaml").symlink_to(directory / "a.yaml")

    assert fingerprint(directory, settings, store) is None


def test_fingerprint_none_without_directory(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    store = Store.open(settings.state_dir)

    assert fingerprint(tmp_path / "absent", settings, store) is None


def test_file_hashes_by_file_name(tmp_path: Path) -> None:
    directory = job_dir(tmp_path)
    (directory / "README.md").write_text("Jobs.\n", encoding="utf-8")
    settings = Settings(state_dir=tmp_path / "state")
    store = Store.open(settings.state_dir)

    inputs = read_inputs(directory, settings, store.jobs().values())

    assert inputs is not None
    assert sorted(inputs.file_hashes) == ["a.status.yaml", "a.yaml"]
    expected = hashlib.sha256(b"batch_ids: [batch_1]\n").hexdigest()
    assert inputs.file_hashes["a.yaml"] == expected


def settled_row_store(tmp_path: Path, directory: Path) -> tuple[Settings, Store]:
    """Store a paused job whose row matches a.yaml and a.status.yaml on disk."""
    settings = Settings(state_dir=tmp_path / "state")
    store = Store.open(settings.state_dir)
    job_hash = hashlib.sha256((directory / "a.yaml").read_bytes()).hexdigest()
    status_hash = hashlib.sha256((directory / "a.status.yaml").read_bytes())
    store.insert_job(
        "a",
        path=str(directory / "a.yaml"),
        revision=job_hash[:12],
        spec_revision=job_hash[:12],
        status="paused",
        status_digest=f"document:{status_hash.hexdigest()}",
    )
    return settings, store


def record_clean(directory: Path, settings: Settings, store: Store) -> bool:
    files = {"a": (directory / "a.yaml", directory / "a.status.yaml")}
    report = CycleReport(plan=Plan(()), dry_run=False)
    return record(store, directory, settings, report, files)


def test_record_settled_when_rows_match_files(tmp_path: Path) -> None:
    directory = job_dir(tmp_path)
    settings, store = settled_row_store(tmp_path, directory)

    assert record_clean(directory, settings, store)
    assert store.settled_fingerprint() == fingerprint(directory, settings, store)


def test_record_skips_file_added_mid_cycle(tmp_path: Path) -> None:
    directory = job_dir(tmp_path)
    settings, store = settled_row_store(tmp_path, directory)
    assert record_clean(directory, settings, store)

    (directory / "b.yaml").write_text("batch_ids: [batch_2]\n", encoding="utf-8")

    assert not record_clean(directory, settings, store)
    assert store.settled_fingerprint() is None


def test_record_skips_hand_edited_status_file(tmp_path: Path) -> None:
    directory = job_dir(tmp_path)
    settings, store = settled_row_store(tmp_path, directory)

    (directory / "a.status.yaml").write_text("job: a\nstatus: x\n", encoding="utf-8")

    assert not record_clean(directory, settings, store)
