"""Watching the job directory for changes of job files.

``watchfiles`` reports file events in bursts: a burst ends after
``WATCH_STEP_MS`` without an event or after ``WATCH_DEBOUNCE_MS`` in all, so
a ``git checkout`` of many files or an editor's save by rename wakes the
daemon once. Status files, hidden files and editor temporaries are filtered
out, so the daemon's own writes never wake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

from reconciler.spec import is_job_file_name

log = logging.getLogger(__name__)

WATCH_STEP_MS = 200
"""A burst of file events ends after this many milliseconds without one."""
WATCH_DEBOUNCE_MS = 1000
"""Maximum length of a burst of file events that makes one wake-up, in milliseconds."""
WATCH_RETRY_SECONDS = 5.0
"""Wait before watching again when the job directory cannot be watched."""


def is_job_file_event(change: Change, path: str) -> bool:
    """Tell whether a file event concerns a job file.

    Status files, hidden files and editor temporaries are not job files, so
    their events never start a cycle; the daemon's own status writes included.
    """
    return is_job_file_name(os.path.basename(path))


class JobDirWatcher:
    """Watches the job directory and reports each burst of job-file changes.

    A directory on the path may be a symbolic link, as in a ``git-sync``
    checkout that swaps a link to each new worktree. Then the directory that
    contains the link is watched too, and a swap restarts the watch on the new
    target.

    Args:
        job_dir: the job directory.
        on_change: called with a short description of each burst.
    """

    def __init__(self, job_dir: Path, on_change: Callable[[str], None]) -> None:
        self.job_dir = job_dir.absolute()
        self._on_change = on_change
        self._stopped = False
        self._round: asyncio.Event | None = None
        self._watched = ""
        self._links: dict[str, str] = {}
        self._failure: str | None = None

    def stop(self) -> None:
        """End the watch; ``run`` returns within a step of the watcher."""
        self._stopped = True
        if self._round is not None:
            self._round.set()

    def restart(self) -> None:
        """Resolve the job directory again and watch what it points to now."""
        if self._round is not None:
            self._round.set()

    async def run(self) -> None:
        """Watch until ``stop``; failures to watch are logged and retried."""
        while not self._stopped:
            self._round = asyncio.Event()
            try:
                await self._watch_once(self._round)
            except (OSError, RuntimeError) as error:
                self._report_failure(error)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WATCH_RETRY_SECONDS):
                        await self._round.wait()

    async def _watch_once(self, round_over: asyncio.Event) -> None:
        self._watched = os.path.realpath(self.job_dir)
        self._links = _symlinks_on_path(self.job_dir)
        targets = [self._watched, *sorted(set(self._links.values()))]
        log.debug("Watching %s", ", ".join(targets))
        async for changes in awatch(
            *targets,
            watch_filter=self._accept,
            debounce=WATCH_DEBOUNCE_MS,
            step=WATCH_STEP_MS,
            stop_event=round_over,
            recursive=False,
        ):
            if self._failure is not None:
                log.info("Watching the job directory %s works again", self.job_dir)
                self._failure = None
            if os.path.realpath(self.job_dir) != self._watched:
                self._on_change("the job directory now points to a new checkout")
                return
            names = sorted({os.path.basename(path) for _, path in changes})
            if any(is_job_file_name(name) for name in names):
                self._on_change("changed job files: " + ", ".join(names))

    def _accept(self, change: Change, path: str) -> bool:
        parent, name = os.path.split(path)
        if parent == self._watched:
            return is_job_file_event(change, path)
        return self._links.get(name) == parent

    def _report_failure(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"
        if text != self._failure:
            log.error(
                "Cannot watch the job directory %s (%s); retrying every %g s, and "
                "timed cycles go on",
                self.job_dir,
                text,
                WATCH_RETRY_SECONDS,
            )
        self._failure = text


def _symlinks_on_path(path: Path) -> dict[str, str]:
    """Map each symbolic link on ``path`` to the real directory that contains it."""
    links = {}
    for part in (path, *path.parents):
        if part.is_symlink():
            links[part.name] = os.path.realpath(part.parent)
    return links
