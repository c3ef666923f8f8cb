"""Parts of the daemon: the state lock, repeated logs, the file filter, the loop."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from watchfiles import Change

from reconciler.daemon import (
    Daemon,
    DaemonRunningError,
    RepeatFilter,
    StateLock,
    WatchOptions,
)
from reconciler.settings import Settings
from reconciler.watching import is_job_file_event


def test_lock_refuses_second_holder(tmp_path: Path) -> None:
    """A second lock on one state directory fails and names the holder's PID."""
    with StateLock(tmp_path / "state") as first:
        assert first.path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(DaemonRunningError, match=rf"\(PID {os.getpid()}\)"):
            StateLock(tmp_path / "state").acquire()

    with StateLock(tmp_path / "state"):
        pass
    assert (tmp_path / "state" / "daemon.lock").read_text() == ""


def record(
    message: str, created: float, level: int = logging.ERROR
) -> logging.LogRecord:
    entry = logging.LogRecord("reconciler.cycle", level, "x.py", 1, message, None, None)
    entry.created = created
    return entry


def test_repeat_filter_counts_repeats() -> None:
    """An identical error passes once per window, then with its count."""
    repeats = RepeatFilter(window=60)

    passed = [
        repeats.filter(record("Batch batch_a cannot be polled", t)) for t in (0, 10, 20)
    ]
    other = repeats.filter(record("Batch batch_b cannot be polled", 21))
    info = repeats.filter(record("Polling 1 batches", 22, logging.INFO))
    later = record("Batch batch_a cannot be polled", 61)
    passed_later = repeats.filter(later)

    assert passed == [True, False, False]
    assert other
    assert info
    assert passed_later
    assert later.getMessage() == (
        "Batch batch_a cannot be polled "
        "(repeated 2 more times since 1970-01-01T00:00:00Z)"
    )
    assert vars(later)["repeated"] == 2


def test_repeat_filter_flush_reports_open_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At shutdown the counts not yet reported are logged once."""
    repeats = RepeatFilter(window=60)
    for moment in (0, 1, 2):
        repeats.filter(record("Job a: token missing", moment))
    logger = logging.getLogger("test.repeats")

    with caplog.at_level(logging.ERROR, logger="test.repeats"):
        repeats.flush(logger)

    assert [r.getMessage() for r in caplog.records] == [
        "Job a: token missing (repeated 2 more times since 1970-01-01T00:00:00Z)"
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("alpha.yaml", True, id="yaml"),
        pytest.param("alpha.yml", True, id="yml"),
        pytest.param("alpha.status.yaml", False, id="status"),
        pytest.param(".alpha.yaml", False, id="hidden"),
        pytest.param(".alpha.yaml.swp", False, id="vim"),
        pytest.param("alpha.yaml~", False, id="backup"),
        pytest.param(".#alpha.yaml", False, id="emacs-lock"),
        pytest.param("#alpha.yaml#", False, id="emacs-autosave"),
        pytest.param("README.md", False, id="other"),
    ],
)
def test_watch_filter(name: str, expected: bool) -> None:
    """Only job files start a cycle."""
    assert is_job_file_event(Change.modified, f"/repo/jobs.d/{name}") is expected


async def test_daemon_stops_all_its_tasks(tmp_path: Path) -> None:
    """After run returns, no task the daemon started is left."""
    job_dir = tmp_path / "jobs.d"
    job_dir.mkdir()
    options = WatchOptions(
        job_dir=job_dir, settings=Settings(state_dir=tmp_path / "state")
    )
    daemon = Daemon(options, handle_signals=False)
    before = asyncio.all_tasks()
    run = asyncio.create_task(daemon.run(), name="tc-test-daemon")
    for _ in range(100):
        if daemon.metrics.cycles.labels(outcome="ok")._value.get() >= 1:
            break
        await asyncio.sleep(0.02)
    names = {task.get_name() for task in asyncio.all_tasks() - before}

    daemon.request_stop("test")
    await asyncio.wait_for(run, timeout=10)

    assert "tc-watch-files" in names
    assert [n for n in names if not n.startswith("tc-")] == []
    assert asyncio.all_tasks() - before == set()
