"""`tc import-teckochecker`: original databases of both schemas become job files.

The original databases are built here with the standard ``sqlite3`` module,
with the tables and columns of the original TeckoChecker, and its secrets are
encrypted the way it encrypts them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
import yaml
from cryptography.fernet import Fernet

from reconciler.errors import SecretError
from reconciler.importer import ImportOptions, import_database, slugify, unique_slugs
from reconciler.original_db import ImportSourceError, read_original
from reconciler.secrets import SecretVault
from reconciler.settings import Settings
from reconciler.spec import load_job_file
from reconciler.store import Store

if TYPE_CHECKING:
    from reconciler.simulator import Simulator

REPO_ROOT = Path(__file__).resolve().parents[1]
ORIGINAL_SECRET_KEY = "original-teckochecker-secret-key"
OPENAI_KEY = "sk-import-test-8d2f4a6c1e"
KEBOOLA_TOKEN = "2468-13579-importTokenPart"
STACK_URL = "https://connection.eu-central-1.keboola.com"
COMPONENT = "kds-team.app-custom-python"


@dataclass
class OriginalJobRow:
    """A job of the original: its row and its batches with their statuses."""

    id: int
    name: str
    batches: list[tuple[str, str]]
    status: str = "active"
    openai_secret_id: int | None = 1
    keboola_secret_id: int | None = 2
    stack_url: str = STACK_URL
    configuration_id: str = "12345"
    poll_interval_seconds: int = 120
    extra: dict[str, Any] = field(default_factory=dict)


def original_encrypt(value: str, secret_key: str = ORIGINAL_SECRET_KEY) -> str:
    """Encrypt a value as the original TeckoChecker does."""
    key = base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest())
    return Fernet(key).encrypt(value.encode()).decode()


def build_original(
    path: Path,
    jobs: list[OriginalJobRow],
    *,
    schema: Literal["multi", "single"] = "multi",
    secrets: list[tuple[int, str, str, str]] | None = None,
) -> Path:
    """Write an original TeckoChecker database of the given schema.

    ``secrets`` are ``(id, name, type, clear value)``; the default is an
    OpenAI key with id 1 and a Keboola token with id 2.
    """
    if secrets is None:
        secrets = [
            (1, "OpenAI Production", "openai", OPENAI_KEY),
            (2, "Keboola EU", "keboola", KEBOOLA_TOKEN),
        ]
    conn = sqlite3.connect(path)
    batch_column = "batch_id VARCHAR(255) NOT NULL," if schema == "single" else ""
    conn.executescript(
        f"""
        CREATE TABLE secrets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name VARCHAR(255) NOT NULL UNIQUE,
            type VARCHAR(50) NOT NULL,
            value TEXT NOT NULL,
            created_at DATETIME NOT NULL
        );
        CREATE TABLE polling_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name VARCHAR(255) NOT NULL,
            {batch_column}
            openai_secret_id INTEGER,
            keboola_secret_id INTEGER,
            keboola_stack_url VARCHAR(500) NOT NULL,
            keboola_component_id VARCHAR(255) NOT NULL,
            keboola_configuration_id VARCHAR(255) NOT NULL,
            poll_interval_seconds INTEGER NOT NULL DEFAULT 120,
            status VARCHAR(50) NOT NULL DEFAULT 'active',
            last_check_at DATETIME,
            next_check_at DATETIME,
            created_at DATETIME NOT NULL,
            completed_at DATETIME
        );
        """
    )
    if schema == "multi":
        conn.execute(
            """
            CREATE TABLE job_batches (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                job_id INTEGER NOT NULL,
                batch_id VARCHAR(255) NOT NULL,
                status VARCHAR(50) NOT NULL DEFAULT 'in_progress',
                created_at DATETIME NOT NULL,
                completed_at DATETIME
            )
            """
        )
    for secret_id, name, kind, value in secrets:
        conn.execute(
            "INSERT INTO secrets VALUES (?, ?, ?, ?, '2025-01-01 10:00:00')",
            (secret_id, name, kind, original_encrypt(value)),
        )
    for job in jobs:
        row: dict[str, Any] = {
            "id": job.id,
            "name": job.name,
            "openai_secret_id": job.openai_secret_id,
            "keboola_secret_id": job.keboola_secret_id,
            "keboola_stack_url": job.stack_url,
            "keboola_component_id": COMPONENT,
            "keboola_configuration_id": job.configuration_id,
            "poll_interval_seconds": job.poll_interval_seconds,
            "status": job.status,
            "created_at": "2025-01-01 10:00:00",
            "completed_at": (
                "2025-01-02 11:30:00.123456" if job.status != "active" else None
            ),
            **job.extra,
        }
        if schema == "single":
            row["batch_id"] = job.batches[0][0]
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(
            f"INSERT INTO polling_jobs ({columns}) VALUES ({marks})", list(row.values())
        )
        if schema == "multi":
            for index, (batch_id, status) in enumerate(job.batches):
                terminal = status in ("completed", "failed", "cancelled", "expired")
                conn.execute(
                    "INSERT INTO job_batches (job_id, batch_id, status, created_at, "
                    "completed_at) VALUES (?, ?, ?, ?, ?)",
                    (
                        job.id,
                        batch_id,
                        status,
                        f"2025-01-01 10:00:0{index}",
                        "2025-01-01 12:00:00" if terminal else None,
                    ),
                )
    conn.commit()
    conn.close()
    return path


def mixed_jobs(stack_url: str = STACK_URL) -> list[OriginalJobRow]:
    """Return single- and multi-batch, paused and finished jobs of one original."""
    return [
        OriginalJobRow(
            1,
            "Catalogue EN",
            [("batch_en_a", "completed"), ("batch_en_b", "in_progress")],
            stack_url=stack_url,
        ),
        OriginalJobRow(
            2, "Catalogue EN", [("batch_en_c", "in_progress")], stack_url=stack_url
        ),
        OriginalJobRow(
            3,
            "Ročenka / 2025",
            [("batch_paused", "in_progress")],
            status="paused",
            stack_url=stack_url,
        ),
        OriginalJobRow(
            4,
            "Finished run",
            [("batch_done_a", "completed"), ("batch_done_b", "expired")],
            status="completed_with_failures",
            stack_url=stack_url,
        ),
        OriginalJobRow(
            5,
            "Rejected run",
            [("batch_rejected", "completed")],
            status="failed",
            stack_url=stack_url,
        ),
    ]


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    """Return settings with a state directory under ``tmp_path``."""
    return Settings(state_dir=tmp_path / "state", **changes)


def load_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML file."""
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


class TestReadOriginal:
    def test_multi_batch_schema_is_read(self, tmp_path: Path) -> None:
        """The multi-batch schema gives each job its batches in the order added."""
        path = build_original(tmp_path / "tc.db", mixed_jobs())
        original = read_original(path)
        assert original.schema == "multi-batch"
        assert [j.id for j in original.jobs] == [1, 2, 3, 4, 5]
        first = original.jobs[0]
        assert [b.batch_id for b in first.batches] == ["batch_en_a", "batch_en_b"]
        assert first.batches[0].status == "completed"
        assert first.batches[0].completed_at == "2025-01-01T12:00:00Z"
        assert sorted(original.secrets) == [1, 2]

    def test_single_batch_schema_is_read(self, tmp_path: Path) -> None:
        """The single-batch schema gives each job its one batch."""
        jobs = [
            OriginalJobRow(1, "Old", [("batch_old", "")], status="completed"),
            OriginalJobRow(2, "Running", [("batch_running", "")]),
        ]
        original = read_original(
            build_original(tmp_path / "tc.db", jobs, schema="single")
        )
        assert original.schema == "single-batch"
        assert [b.batch_id for b in original.jobs[0].batches] == ["batch_old"]
        assert original.jobs[0].batches[0].status == "completed"
        assert original.jobs[1].batches[0].status is None

    def test_secret_repr_hides_value(self, tmp_path: Path) -> None:
        """An original secret's repr does not show its token."""
        original = read_original(build_original(tmp_path / "tc.db", mixed_jobs()))
        secret = original.secrets[1]
        assert secret.value not in repr(secret)

    def test_missing_file_is_error(self, tmp_path: Path) -> None:
        """A path that does not exist is reported."""
        with pytest.raises(ImportSourceError, match="does not exist"):
            read_original(tmp_path / "absent.db")

    def test_not_sqlite_is_error(self, tmp_path: Path) -> None:
        """A file that is not SQLite is reported, not a traceback."""
        path = tmp_path / "tc.db"
        path.write_bytes(b"not a database at all" * 50)
        with pytest.raises(ImportSourceError, match="cannot be read as a SQLite"):
            read_original(path)

    def test_other_database_is_error(self, tmp_path: Path) -> None:
        """A SQLite file without the original's tables is reported."""
        path = tmp_path / "other.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE things (id INTEGER)")
        conn.commit()
        conn.close()
        with pytest.raises(ImportSourceError, match="no polling_jobs table"):
            read_original(path)

    def test_missing_column_is_named(self, tmp_path: Path) -> None:
        """A table without a needed column names that column."""
        path = tmp_path / "tc.db"
        conn = sqlite3.connect(path)
        conn.executescript(
            "CREATE TABLE polling_jobs (id INTEGER, name TEXT);"
            "CREATE TABLE secrets (id INTEGER, name TEXT, type TEXT, value TEXT);"
        )
        conn.close()
        with pytest.raises(ImportSourceError, match="no column openai_secret_id"):
            read_original(path)


class TestNames:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("Catalogue EN", "catalogue-en", id="spaces"),
            pytest.param("Ročenka / 2025", "rocenka-2025", id="diacritics"),
            pytest.param("--x--", "x", id="dashes"),
            pytest.param("日本語", "job-7", id="no-ascii"),
            pytest.param("a" * 80, "a" * 60, id="long"),
        ],
    )
    def test_slugify(self, text: str, expected: str) -> None:
        """Slugs are lower-case ASCII letters, digits and dashes."""
        assert slugify(text, "job-7") == expected

    def test_unique_slugs_number_duplicates(self) -> None:
        """Duplicate names get numbered slugs in id order, never colliding."""
        slugs = unique_slugs([(3, "Foo"), (1, "Foo"), (2, "Foo 2")], "job")
        assert slugs == {1: "foo", 2: "foo-2", 3: "foo-3"}


class TestImport:
    def test_jobs_become_valid_files(self, tmp_path: Path) -> None:
        """Unfinished jobs become job files that validate; finished are skipped."""
        source = build_original(tmp_path / "teckochecker.db", mixed_jobs())
        out = tmp_path / "jobs.d"

        report = import_database(
            source, settings_for(tmp_path), ImportOptions(out_dir=out)
        )

        assert [j.name for j in report.jobs] == [
            "catalogue-en",
            "catalogue-en-2",
            "rocenka-2025",
        ]
        assert report.batch_count == 4
        assert report.ok
        skipped = {s.what: s for s in report.skipped}
        assert "pass --all" in skipped["job 4 'Finished run'"].reason
        assert not skipped["job 4 'Finished run'"].problem
        assert sorted(p.name for p in out.iterdir()) == [
            "catalogue-en-2.yaml",
            "catalogue-en.yaml",
            "rocenka-2025.yaml",
        ]
        for path in out.iterdir():
            loaded = load_job_file(path)
            assert loaded.error is None, str(loaded.error)
        first = load_yaml(out / "catalogue-en.yaml")
        assert first == {
            "version": 1,
            "description": "Catalogue EN",
            "batch_ids": ["batch_en_a", "batch_en_b"],
            "openai": {"api_key": "secret:openai-production"},
            "keboola": {
                "stack_url": STACK_URL,
                "token": "secret:keboola-eu",
                "component_id": COMPONENT,
                "configuration_id": "12345",
            },
            "poll_interval_seconds": 120,
        }
        text = (out / "catalogue-en.yaml").read_text()
        assert text.startswith("# Imported by `tc import-teckochecker` from ")
        assert "configuration_id: '12345'" in text
        paused = load_yaml(out / "rocenka-2025.yaml")
        assert paused["suspend"] is True
        assert paused["description"] == "Ročenka / 2025"

    def test_state_is_seeded(self, tmp_path: Path) -> None:
        """Terminal batch statuses are carried over, unknown ones left to polling."""
        source = build_original(tmp_path / "tc.db", mixed_jobs())
        settings = settings_for(tmp_path)
        import_database(source, settings, ImportOptions(out_dir=tmp_path / "jobs.d"))

        store = Store.open(settings.state_dir)
        try:
            jobs = store.jobs()
            assert sorted(jobs) == ["catalogue-en", "catalogue-en-2", "rocenka-2025"]
            assert jobs["rocenka-2025"].status == "paused"
            assert jobs["catalogue-en"].status == "active"
            assert jobs["catalogue-en"].path == str(
                tmp_path / "jobs.d" / "catalogue-en.yaml"
            )
            loaded = load_job_file(tmp_path / "jobs.d" / "catalogue-en.yaml")
            assert jobs["catalogue-en"].revision == loaded.revision
            batches = {b.batch_id: b for b in store.batches("catalogue-en")}
            assert batches["batch_en_a"].status == "completed"
            assert batches["batch_en_a"].terminal_at == "2025-01-01T12:00:00Z"
            assert batches["batch_en_b"].status is None
            assert jobs["catalogue-en"].trigger_id is None
            events = [e.kind for e in store.events("catalogue-en")]
            assert events == ["imported"]
        finally:
            store.close()

    def test_all_seeds_sent_triggers(self, tmp_path: Path) -> None:
        """With --all, finished jobs carry the triggers the original sent."""
        source = build_original(tmp_path / "tc.db", mixed_jobs())
        settings = settings_for(tmp_path)
        options = ImportOptions(out_dir=tmp_path / "jobs.d", include_finished=True)

        report = import_database(source, settings, options)

        by_name = {j.name: j for j in report.jobs}
        assert by_name["finished-run"].trigger == "accepted"
        assert by_name["rejected-run"].trigger == "rejected"
        store = Store.open(settings.state_dir)
        try:
            finished = store.job("finished-run")
            assert finished is not None
            assert finished.status == "completed_with_failures"
            assert finished.trigger_id is not None
            trigger = store.trigger(finished.trigger_id)
            assert trigger is not None
            assert trigger.state == "accepted"
            assert trigger.keboola_finished
            assert trigger.sent_at == "2025-01-02T11:30:00Z"
            assert trigger.parameters == {
                "batch_ids_completed": '["batch_done_a"]',
                "batch_ids_failed": '["batch_done_b"]',
                "batch_count_total": "2",
                "batch_count_completed": "1",
                "batch_count_failed": "1",
            }
            assert trigger.target == {
                "queue_url": "https://queue.eu-central-1.keboola.com",
                "component_id": COMPONENT,
                "configuration_id": "12345",
            }
            rejected = store.job("rejected-run")
            assert rejected is not None
            assert rejected.status == "failed"
            assert rejected.trigger_id is not None
            rejected_trigger = store.trigger(rejected.trigger_id)
            assert rejected_trigger is not None
            assert "tc rerun rejected-run" in (rejected_trigger.keboola_message or "")
        finally:
            store.close()

    def test_secret_key_stores_values(self, tmp_path: Path) -> None:
        """With the original's SECRET_KEY the values land in the encrypted store."""
        source = build_original(tmp_path / "tc.db", mixed_jobs())
        settings = settings_for(tmp_path)
        options = ImportOptions(
            out_dir=tmp_path / "jobs.d", secret_key=ORIGINAL_SECRET_KEY
        )

        report = import_database(source, settings, options)

        assert [(s.name, s.type, s.stored) for s in report.secrets] == [
            ("openai-production", "openai", True),
            ("keboola-eu", "keboola", True),
        ]
        store = Store.open(settings.state_dir)
        try:
            vault = SecretVault(store, environ={})
            assert vault.reveal("openai-production") == OPENAI_KEY
            assert vault.reveal("keboola-eu") == KEBOOLA_TOKEN
        finally:
            store.close()
        assert ORIGINAL_SECRET_KEY not in repr(options)

    def test_wrong_secret_key_writes_nothing(self, tmp_path: Path) -> None:
        """A wrong SECRET_KEY names the secret, and nothing is written."""
        source = build_original(tmp_path / "tc.db", mixed_jobs())
        settings = settings_for(tmp_path)
        options = ImportOptions(out_dir=tmp_path / "jobs.d", secret_key="wrong")

        with pytest.raises(SecretError) as caught:
            import_database(source, settings, options)

        message = str(caught.value)
        assert "secret 'OpenAI Production' (id 1)" in message
        assert "cannot be decrypted with the given --secret-key" in message
        assert not (tmp_path / "jobs.d").exists()
        assert not settings.state_dir.exists()

    def test_without_key_values_are_not_stored(self, tmp_path: Path) -> None:
        """Without --secret-key the files refer to secrets whose values are absent."""
        source = build_original(tmp_path / "tc.db", mixed_jobs())
        settings = settings_for(tmp_path)
        report = import_database(
            source, settings, ImportOptions(out_dir=tmp_path / "jobs.d")
        )
        assert [s.stored for s in report.secrets] == [False, False]
        store = Store.open(settings.state_dir)
        try:
            assert store.secrets() == []
        finally:
            store.close()

    def test_secret_already_stored_is_kept(self, tmp_path: Path) -> None:
        """A secret of the same name in the store is kept and reported as present."""
        source = build_original(tmp_path / "tc.db", mixed_jobs())
        settings = settings_for(tmp_path)
        store = Store.open(settings.state_dir)
        try:
            SecretVault(store, environ={}).put("keboola-eu", "mine-already", "keboola")
        finally:
            store.close()
        options = ImportOptions(
            out_dir=tmp_path / "jobs.d", secret_key=ORIGINAL_SECRET_KEY
        )

        report = import_database(source, settings, options)

        states = {s.name: (s.stored, s.in_store) for s in report.secrets}
        assert states == {
            "openai-production": (True, True),
            "keboola-eu": (False, True),
        }
        assert any(
            "keboola-eu is already in the secret store" in w for w in report.warnings
        )
        store = Store.open(settings.state_dir)
        try:
            assert SecretVault(store, environ={}).reveal("keboola-eu") == "mine-already"
        finally:
            store.close()

    def test_existing_files_are_never_overwritten(self, tmp_path: Path) -> None:
        """A second import writes nothing and leaves the files as they are."""
        source = build_original(tmp_path / "tc.db", mixed_jobs())
        settings = settings_for(tmp_path)
        out = tmp_path / "jobs.d"
        out.mkdir()
        mine = out / "catalogue-en.yml"
        mine.write_text("# my own job\n", encoding="utf-8")

        first = import_database(source, settings, ImportOptions(out_dir=out))
        contents = {p.name: p.read_bytes() for p in out.iterdir()}
        second = import_database(source, settings, ImportOptions(out_dir=out))

        assert "catalogue-en" not in [j.name for j in first.jobs]
        assert second.jobs == []
        assert {p.name: p.read_bytes() for p in out.iterdir()} == contents
        assert mine.read_text() == "# my own job\n"
        reasons = [s.reason for s in second.skipped if s.what.startswith("job 1 ")]
        assert reasons == [
            f"{mine} exists and is never overwritten; if it is "
            "another job, move it aside and import again"
        ]

    def test_dry_run_writes_nothing(self, tmp_path: Path) -> None:
        """A dry run reports the files it would write and creates nothing."""
        source = build_original(tmp_path / "tc.db", mixed_jobs())
        settings = settings_for(tmp_path)
        options = ImportOptions(
            out_dir=tmp_path / "jobs.d", dry_run=True, secret_key=ORIGINAL_SECRET_KEY
        )

        report = import_database(source, settings, options)

        assert len(report.jobs) == 3
        assert report.jobs[0].text.startswith("# Imported by")
        assert all(s.stored for s in report.secrets)
        assert not (tmp_path / "jobs.d").exists()
        assert not settings.state_dir.exists()

    def test_single_batch_schema_import(self, tmp_path: Path) -> None:
        """A single-batch database imports, and a completed job is not triggered."""
        jobs = [
            OriginalJobRow(1, "Old one", [("batch_old", "")], status="completed"),
            OriginalJobRow(2, "Running", [("batch_running", "")]),
        ]
        source = build_original(tmp_path / "tc.db", jobs, schema="single")
        settings = settings_for(tmp_path)
        options = ImportOptions(out_dir=tmp_path / "jobs.d", include_finished=True)

        report = import_database(source, settings, options)

        assert report.schema == "single-batch"
        assert [(j.name, j.trigger) for j in report.jobs] == [
            ("old-one", "accepted"),
            ("running", None),
        ]
        store = Store.open(settings.state_dir)
        try:
            old = store.batches("old-one")
            assert [(b.batch_id, b.status) for b in old] == [("batch_old", "completed")]
            job = store.job("old-one")
            assert job is not None
            assert job.status == "completed"
        finally:
            store.close()

    def test_job_without_secret_is_skipped(self, tmp_path: Path) -> None:
        """A job whose secret the original deleted is skipped as a problem."""
        jobs = [
            OriginalJobRow(
                1, "Orphan", [("batch_x", "in_progress")], keboola_secret_id=None
            )
        ]
        source = build_original(tmp_path / "tc.db", jobs)
        report = import_database(
            source, settings_for(tmp_path), ImportOptions(out_dir=tmp_path / "j")
        )
        assert report.jobs == []
        assert not report.ok
        assert report.skipped[0].reason == (
            "has no Keboola secret (the original deleted it)"
        )

    def test_invalid_job_is_skipped_with_reason(self, tmp_path: Path) -> None:
        """A job that cannot make a valid file is skipped with the problem."""
        jobs = [
            OriginalJobRow(
                1, "Fast", [("batch_x", "in_progress")], poll_interval_seconds=5
            )
        ]
        source = build_original(tmp_path / "tc.db", jobs)
        report = import_database(
            source, settings_for(tmp_path), ImportOptions(out_dir=tmp_path / "j")
        )
        assert report.jobs == []
        assert "does not make a valid job file" in report.skipped[0].reason
        assert "poll_interval_seconds" in report.skipped[0].reason

    def test_stack_without_connection_host_keeps_original_queue(
        self, tmp_path: Path
    ) -> None:
        """A stack URL without a connection. host keeps the original's queue URL."""
        jobs = [
            OriginalJobRow(
                1,
                "Custom",
                [("batch_x", "in_progress")],
                stack_url="https://keboola.internal.example/",
            )
        ]
        source = build_original(tmp_path / "tc.db", jobs)
        report = import_database(
            source, settings_for(tmp_path), ImportOptions(out_dir=tmp_path / "j")
        )
        document = load_yaml(tmp_path / "j" / "custom.yaml")
        assert document["keboola"]["queue_url"] == "https://keboola.internal.example"
        assert any(
            "TC_ALLOWED_HOSTS=keboola.internal.example" in w for w in report.warnings
        )

    def test_active_job_with_terminal_batches_warns(self, tmp_path: Path) -> None:
        """An active job whose batches all finished may have triggered: a warning."""
        jobs = [OriginalJobRow(1, "Stuck", [("batch_x", "completed")])]
        source = build_original(tmp_path / "tc.db", jobs)
        report = import_database(
            source, settings_for(tmp_path), ImportOptions(out_dir=tmp_path / "j")
        )
        assert report.jobs[0].trigger is None
        assert any("may have triggered Keboola" in w for w in report.warnings)


# ----------------------------------------------------------------------------
# The command, run as a subprocess


def child_env(workdir: Path, **extra: str) -> dict[str, str]:
    """Return a child's environment: no TC_*, no proxies, this source tree."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TC_") and "proxy" not in name.lower()
    }
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        NO_COLOR="1",
        TC_STATE_DIR=str(workdir / "state"),
        TC_ALLOWED_HOSTS="127.0.0.1",
        TC_HTTP_TIMEOUT="10",
        TC_RETRY_MAX_WAIT="1",
    )
    env.update(extra)
    return env


def tc(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `tc` in ``workdir`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=workdir,
        env=child_env(workdir, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestCommand:
    def test_import_prints_summary(self, tmp_path: Path) -> None:
        """The command writes the files and sums up jobs, batches, secrets, skips."""
        build_original(tmp_path / "teckochecker.db", mixed_jobs())
        (tmp_path / "key.txt").write_text(ORIGINAL_SECRET_KEY + "\n")

        result = tc(
            tmp_path,
            "import-teckochecker",
            "teckochecker.db",
            "--secret-key-file",
            "key.txt",
        )

        assert result.returncode == 0, result.stderr
        assert (
            "Wrote 3 job files with 4 batches to jobs.d; 2 of 2 secrets stored; "
            "2 jobs skipped."
        ) in result.stdout
        assert "skipped job 4 'Finished run': finished (completed_with_failures)" in (
            result.stderr
        )
        assert "+ jobs.d/catalogue-en.yaml  from job 1 'Catalogue EN' (active)" in (
            result.stdout
        )
        for secret in (OPENAI_KEY, KEBOOLA_TOKEN, ORIGINAL_SECRET_KEY):
            assert secret not in result.stdout + result.stderr
        validated = tc(tmp_path, "validate", "jobs.d")
        assert validated.returncode == 0, validated.stderr

    def test_dry_run_prints_files(self, tmp_path: Path) -> None:
        """--dry-run prints each file's content and writes nothing."""
        build_original(tmp_path / "teckochecker.db", mixed_jobs())
        result = tc(tmp_path, "import-teckochecker", "teckochecker.db", "--dry-run")
        assert result.returncode == 0, result.stderr
        assert "      description: Catalogue EN" in result.stdout
        assert "Dry run: nothing was written." in result.stdout
        assert not (tmp_path / "jobs.d").exists()
        assert not (tmp_path / "state").exists()

    def test_both_key_options_are_usage_error(self, tmp_path: Path) -> None:
        """--secret-key with --secret-key-file is wrong usage."""
        build_original(tmp_path / "teckochecker.db", mixed_jobs())
        (tmp_path / "key.txt").write_text("k")
        result = tc(
            tmp_path,
            "import-teckochecker",
            "teckochecker.db",
            "--secret-key",
            "k",
            "--secret-key-file",
            "key.txt",
        )
        assert result.returncode == 2

    def test_wrong_key_is_clean_error(self, tmp_path: Path) -> None:
        """A wrong --secret-key is one error line, no traceback."""
        build_original(tmp_path / "teckochecker.db", mixed_jobs())
        result = tc(
            tmp_path, "import-teckochecker", "teckochecker.db", "--secret-key", "nope"
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "cannot be decrypted with the given --secret-key" in result.stderr


# ----------------------------------------------------------------------------
# Import, then `tc apply` against the simulator

Start = Callable[..., "Simulator"]


def simulator_scenario(batches: dict[str, str]) -> dict[str, Any]:
    """Return a scenario that accepts the test key and token; batches by status."""
    return {
        "openai": {
            "api_keys": [OPENAI_KEY],
            "batches": {b: {"script": [{"status": s}]} for b, s in batches.items()},
        },
        "keboola": {
            "tokens": [KEBOOLA_TOKEN],
            "job_seconds": 0.2,
            "configurations": [{"component": COMPONENT, "id": "12345"}],
        },
    }


def trigger_counts(sim: Simulator) -> dict[str, int]:
    """Return how many Keboola jobs each TeckoChecker job created."""
    counts: dict[str, int] = {}
    for record in sim.keboola_jobs():
        values = record["body"].get("variableValuesData", {}).get("values", [])
        names = {v["name"]: v["value"] for v in values}
        job = names["teckochecker_job"]
        counts[job] = counts.get(job, 0) + 1
    return counts


def polled(sim: Simulator, batch_id: str) -> int:
    """Return how many times the simulator was asked for a batch."""
    return sum(1 for r in sim.requests() if r["path"] == f"/v1/batches/{batch_id}")


@pytest.mark.parametrize("schema", ["multi", "single"])
def test_import_then_apply_triggers_once(
    tmp_path: Path, simulator: Start, schema: Literal["multi", "single"]
) -> None:
    """Imported unfinished jobs trigger once each, with tokens from the store."""
    sim = simulator(
        simulator_scenario(
            {
                "batch_en_a": "completed",
                "batch_en_b": "completed",
                "batch_en_c": "failed",
                "batch_paused": "completed",
            }
        )
    )
    jobs = mixed_jobs(stack_url=sim.url)
    if schema == "single":
        jobs = [
            OriginalJobRow(1, "Catalogue EN", [("batch_en_b", "")], stack_url=sim.url),
            OriginalJobRow(2, "Catalogue EN", [("batch_en_c", "")], stack_url=sim.url),
            OriginalJobRow(
                3, "Paused", [("batch_paused", "")], status="paused", stack_url=sim.url
            ),
            OriginalJobRow(
                4, "Done", [("batch_gone", "")], status="completed", stack_url=sim.url
            ),
        ]
    build_original(tmp_path / "teckochecker.db", jobs, schema=schema)

    imported = tc(
        tmp_path,
        "import-teckochecker",
        "teckochecker.db",
        "--all",
        "--secret-key",
        ORIGINAL_SECRET_KEY,
        "--openai-base-url",
        f"{sim.url}/v1",
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    validated = tc(tmp_path, "validate", "jobs.d")
    assert validated.returncode == 0, validated.stdout + validated.stderr

    first = tc(tmp_path, "apply", "jobs.d")
    second = tc(tmp_path, "apply", "jobs.d")

    assert trigger_counts(sim) == {"catalogue-en": 1, "catalogue-en-2": 1}, (
        first.stdout + first.stderr
    )
    status = {
        job["job"]: job
        for job in yaml.safe_load(tc(tmp_path, "status", "-o", "yaml").stdout)
    }
    assert status["catalogue-en"]["status"] == "completed"
    assert status["catalogue-en-2"]["status"] == "completed_with_failures"
    paused = "rocenka-2025" if schema == "multi" else "paused"
    assert status[paused]["status"] == "paused"
    if schema == "multi":
        # Recorded as completed by the original, so never asked for again.
        assert polled(sim, "batch_en_a") == 0
        assert status["finished-run"]["status"] == "completed_with_failures"
        assert status["rejected-run"]["status"] == "failed"
        rejected_error = status["rejected-run"]["error"]["message"]
        assert rejected_error.startswith("the original TeckoChecker recorded")
        assert polled(sim, "batch_done_a") == 0
    else:
        assert status["done"]["status"] == "completed"
        assert polled(sim, "batch_gone") == 0
    for result in (imported, first, second):
        for secret in (OPENAI_KEY, KEBOOLA_TOKEN, ORIGINAL_SECRET_KEY):
            assert secret not in result.stdout + result.stderr
