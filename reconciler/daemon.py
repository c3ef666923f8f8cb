"""The daemon behind ``tc watch``: cycles driven by time, job files, signals and git.

One asyncio loop sleeps until the first of four events. The state database
may have something due: a batch poll, a Keboola job to follow, a trigger
whose outcome is unknown, a rate-limited or leased trigger. A job file may
change, a signal may arrive, or the next git pull may be due. The loop then
pulls if a pull is due, runs one cycle and, with ``--commit-status``, commits
the status files back.

Tasks: the loop runs in the calling task and the file watcher in the task
``tc-watch-files``. Each step of the loop runs in a task of its own
(``tc-cycle-N``, ``tc-git-pull``, ``tc-git-commit``), and the health server
handles each request in a task ``tc-http-request``. SIGTERM and SIGINT let a
running step finish within the grace period and then cancel it. Every task
has ended when ``Daemon.run`` returns.

A cancelled cycle leaves the database consistent: its writes are
transactions, and a trigger whose send was cut off keeps its claim in state
``sending`` until its lease runs out, after which the next cycle searches
Keboola for it before it sends anything again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from reconciler import __version__
from reconciler.cycle import Cycle
from reconciler.errors import TCError
from reconciler.gitops import GitSync, Repository, find_repository, parse_identity
from reconciler.health import (
    HealthServer,
    HttpAddress,
    Liveness,
    Metrics,
    is_loopback,
)
from reconciler.http_pool import Transport, observe_requests
from reconciler.report import CycleReport
from reconciler.schedule import Due, Snapshot, next_due
from reconciler.secrets import SecretResolver
from reconciler.service import resolver_for
from reconciler.settings import Settings
from reconciler.spec import is_job_file_name
from reconciler.store import Store
from reconciler.watching import WATCH_RETRY_SECONDS, JobDirWatcher

log = logging.getLogger(__name__)

LOCK_FILE = "daemon.lock"
WAKE_MARGIN = 0.05
"""Seconds added to a due time, so that the cycle finds the moment due."""
MIN_TIMER_DELAY = 1.0
"""Shortest sleep before a cycle that only time starts; no loop spins faster."""
REPEAT_WINDOW = 600.0
"""Seconds during which a repeated identical warning or error is only counted."""
STORE_RETRY_SECONDS = 30.0
"""Wait before the state database is read again after a failed read."""

T = TypeVar("T")


class DaemonRunningError(TCError):
    """Another daemon holds the lock of the state directory."""


@dataclass(frozen=True)
class WatchOptions:
    """The options of ``tc watch``.

    Attributes:
        job_dir: the directory of job files.
        settings: the operator's settings.
        allow_empty: prune every job when the directory has no job files.
        grace_seconds: seconds a running cycle or git command may go on
            after SIGTERM or SIGINT.
        git_pull_seconds: seconds between two ``git pull``; None for none.
        commit_status: commit changed status files after each cycle.
        push: push the status commits.
        git_identity: ``Name <email>`` of the status commits; None for the
            default identity.
        http: where to serve ``/healthz`` and ``/metrics``; None for nowhere.
        stuck_after: seconds one step of the loop may take before
            ``/healthz`` reports 503.
    """

    job_dir: Path
    settings: Settings
    allow_empty: bool = False
    grace_seconds: float = 30.0
    git_pull_seconds: float | None = None
    commit_status: bool = False
    push: bool = False
    git_identity: str | None = None
    http: HttpAddress | None = None
    stuck_after: float = 300.0


def watch(options: WatchOptions) -> None:
    """Run the daemon until SIGTERM or SIGINT.

    Raises:
        DaemonRunningError: another daemon uses the state directory.
        TCError: the job directory is missing, or the state database, the git
            repository or the HTTP address cannot be used.
    """
    if not options.job_dir.is_dir():
        msg = (
            f"job directory {options.job_dir} not found; create it, or pass the "
            "directory that contains the job files"
        )
        raise TCError(msg)
    with StateLock(options.settings.state_dir), repeat_filter():
        asyncio.run(Daemon(options).run())


# One daemon per state directory


class StateLock:
    """An exclusive ``flock`` on ``daemon.lock`` in the state directory.

    The file contains the PID of the daemon that owns the lock. It is never
    deleted, because a deleted lock file could be locked again by a second
    process while the first still holds the old one.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock and write this process's PID into the file.

        Raises:
            DaemonRunningError: another process holds the lock.
            TCError: the lock file cannot be created.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            msg = f"cannot create the lock file {self.path}: {error.strerror}"
            raise TCError(msg) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            msg = (
                f"another tc watch (PID {pid}) is running with the state directory "
                f"{self.path.parent}; stop it, or give this one another --state-dir"
            )
            raise DaemonRunningError(msg) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Empty the file and drop the lock."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


# Repeated log records


@dataclass
class _Seen:
    first: float
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Passes a warning or error once, then counts its repeats for a while.

    A record repeats another one when logger, level and message are the same.
    The first one after ``window`` seconds passes again and carries the count
    of the ones held back. ``flush`` logs the counts still open, at shutdown.
    """

    def __init__(self, window: float = REPEAT_WINDOW, max_entries: int = 1000) -> None:
        super().__init__()
        self.window = window
        self.max_entries = max_entries
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "repeated", None):
            return True
        message = record.getMessage()
        key = (record.name, record.levelno, message)
        seen = self._seen.get(key)
        if seen is not None and record.created - seen.first < self.window:
            seen.suppressed += 1
            return False
        if seen is not None and seen.suppressed:
            record.msg = f"{message} ({_repeats(seen)})"
            record.args = None
            record.repeated = seen.suppressed
        self._seen.pop(key, None)
        self._seen[key] = _Seen(record.created)
        while len(self._seen) > self.max_entries:
            del self._seen[next(iter(self._seen))]
        return True

    def flush(self, logger: logging.Logger) -> None:
        """Log each record that was counted since it last passed, with its count."""
        for (name, level, message), seen in list(self._seen.items()):
            if seen.suppressed:
                logger.log(
                    level,
                    "%s (%s)",
                    message,
                    _repeats(seen),
                    extra={"repeated": seen.suppressed, "origin": name},
                )
        self._seen.clear()


def _repeats(seen: _Seen) -> str:
    since = datetime.fromtimestamp(seen.first, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"repeated {seen.suppressed} more times since {since}"


@contextlib.contextmanager
def repeat_filter() -> Iterator[RepeatFilter]:
    """Put a ``RepeatFilter`` on every handler of the root logger for the block."""
    handlers = list(logging.getLogger().handlers)
    repeats = RepeatFilter()
    for handler in handlers:
        handler.addFilter(repeats)
    try:
        yield repeats
    finally:
        repeats.flush(log)
        for handler in handlers:
            handler.removeFilter(repeats)


# The loop


class Daemon:
    """The long-running loop of ``tc watch``.

    Args:
        options: the options of ``tc watch``.
        transport: an httpx transport for tests; None for the network.
        handle_signals: install handlers for SIGTERM, SIGINT and SIGHUP;
            tests that call ``request_stop`` pass False.
    """

    def __init__(
        self,
        options: WatchOptions,
        *,
        transport: Transport | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.options = options
        self.settings = options.settings
        self.metrics = Metrics()
        self.liveness = Liveness(stuck_after=options.stuck_after)
        self.http_address: HttpAddress | None = None
        self._transport = transport
        self._handle_signals = handle_signals
        self._wake = asyncio.Event()
        self._reasons: set[str] = set()
        self._stopping = False
        self._stop_deadline: float | None = None
        self._step: asyncio.Task[Any] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._cycles = 0
        self._last_cycle: datetime | None = None
        self._watcher = JobDirWatcher(options.job_dir, self.wake)
        self._git: GitSync | None = None

    def wake(self, reason: str) -> None:
        """Run a cycle as soon as the loop is free."""
        log.debug("Wake-up: %s", reason)
        self._reasons.add(reason)
        self._wake.set()

    def reload(self) -> None:
        """Pull if git pulls are on, read the job directory again, run a cycle."""
        log.info("SIGHUP received: reading the job directory again")
        self._watcher.restart()
        self.wake("SIGHUP")

    def request_stop(self, reason: str) -> None:
        """Start no new work; give the running step the grace period, then cancel it.

        A step is a cycle or a git command. A second request cancels the
        running step at once.
        """
        step = self._step
        running = step is not None and not step.done()
        if self._stopping:
            if step is not None and running:
                log.warning(
                    "%s received again: cancelling %s now", reason, step.get_name()
                )
                step.cancel()
            return
        self._stopping = True
        grace = self.options.grace_seconds
        self._stop_deadline = asyncio.get_running_loop().time() + grace
        self._wake.set()
        if step is None or not running:
            log.info("%s received: stopping", reason)
            return
        log.info(
            "%s received: stopping once %s ends (at most %g s)",
            reason,
            step.get_name(),
            grace,
        )
        self._arm_grace_timer()

    def _arm_grace_timer(self) -> None:
        if self._stop_deadline is None or self._grace_timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._grace_timer = loop.call_at(self._stop_deadline, self._cancel_step)

    def _cancel_step(self) -> None:
        step = self._step
        if step is not None and not step.done():
            log.warning(
                "%s did not end within the %g s grace period; cancelling it",
                step.get_name(),
                self.options.grace_seconds,
            )
            step.cancel()

    async def _run_step(
        self, work: Coroutine[Any, Any, T], name: str
    ) -> asyncio.Task[T]:
        """Run ``work`` in a task named ``name`` that a stop request can cancel."""
        task = asyncio.create_task(work, name=name)
        self._step = task
        if self._stopping:
            self._arm_grace_timer()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            # The loop itself is cancelled: the step must not outlive it.
            task.cancel()
            await asyncio.wait({task})
            raise
        finally:
            self._step = None
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
        return task

    async def run(self) -> None:
        """Run until ``request_stop``; every task started here has ended on return.

        Raises:
            TCError: the state database, the git repository or the HTTP address
                cannot be used.
        """
        store = Store.open(self.settings.state_dir)
        try:
            async with contextlib.AsyncExitStack() as stack:
                self._git = await self._open_git()
                resolver = resolver_for(store)
                stack.callback(observe_requests(self.metrics.observe_request))
                await self._start_http(stack)
                self._install_signals(stack)
                watcher = asyncio.create_task(
                    self._watcher.run(), name="tc-watch-files"
                )
                stack.push_async_callback(self._stop_watcher, watcher)
                self._log_start()
                await self._loop(store, resolver)
        finally:
            store.close()
        log.info("tc watch stopped")

    async def _open_git(self) -> GitSync | None:
        options = self.options
        if not (options.git_pull_seconds or options.commit_status):
            return None
        root = await find_repository(options.job_dir)
        identity = (
            parse_identity(options.git_identity) if options.git_identity else None
        )
        repository = Repository(root, options.job_dir, identity=identity)
        return GitSync(repository, push=options.push, observer=self.metrics.observe_git)

    async def _start_http(self, stack: contextlib.AsyncExitStack) -> None:
        address = self.options.http
        if address is None:
            return
        server = HealthServer(address, self.liveness, self.metrics)
        try:
            self.http_address = await server.start()
        except OSError as error:
            msg = f"cannot listen on {address} for /healthz and /metrics: {error}"
            raise TCError(msg) from error
        stack.push_async_callback(server.close)
        log.info("Serving /healthz and /metrics on http://%s", self.http_address)
        if not is_loopback(self.http_address.host):
            log.warning(
                "/healthz and /metrics listen on %s, beyond this machine; the "
                "metrics show job counts, so limit who can reach the port",
                self.http_address.host,
            )

    def _install_signals(self, stack: contextlib.AsyncExitStack) -> None:
        if not self._handle_signals:
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            stack.callback(loop.remove_signal_handler, signum)

    async def _stop_watcher(self, task: asyncio.Task[None]) -> None:
        self._watcher.stop()
        done, _ = await asyncio.wait({task}, timeout=WATCH_RETRY_SECONDS)
        if not done:
            task.cancel()
            await asyncio.wait({task})

    def _log_start(self) -> None:
        options = self.options
        job_files = sum(
            1 for e in os.scandir(options.job_dir) if is_job_file_name(e.name)
        )
        log.info(
            "tc watch %s started: job directory %s, state directory %s, %d job files",
            __version__,
            options.job_dir,
            self.settings.state_dir,
            job_files,
        )
        if self._git is not None:
            log.info(
                "git: repository %s, pull every %s, commit status files: %s, push: %s",
                self._git.repository.root,
                f"{options.git_pull_seconds:g} s"
                if options.git_pull_seconds
                else "never",
                "yes" if options.commit_status else "no",
                "yes" if options.push else "no",
            )
        if options.git_pull_seconds and options.commit_status and not options.push:
            log.warning(
                "--commit-status without --push: once the remote moves on, the "
                "local status commits make git pull --ff-only fail; add --push"
            )

    async def _loop(self, store: Store, resolver: SecretResolver) -> None:
        pull_every = self.options.git_pull_seconds
        next_pull = time.monotonic() if pull_every else None
        self.wake("start")
        while not self._stopping:
            snapshot = _read_snapshot(store)
            if snapshot is None:
                due = None
                delay = self._delay(None, next_pull, retry=STORE_RETRY_SECONDS)
            else:
                due = next_due(snapshot, self.settings, last_cycle=self._last_cycle)
                delay = self._delay(due, next_pull)
            self.liveness.sleeping(delay)
            await self._sleep(delay)
            if self._stopping:
                break

            reasons = self._take_reasons()
            pull_due = next_pull is not None and next_pull <= time.monotonic()
            if (
                self._git is not None
                and pull_every
                and (pull_due or "SIGHUP" in reasons)
            ):
                self.liveness.working("git pull")
                pulled = await self._run_step(self._git.pull(), "tc-git-pull")
                if not pulled.cancelled() and pulled.result():
                    reasons.add("git pull")
                next_pull = time.monotonic() + pull_every
            if due is not None and due.at <= datetime.now(UTC):
                reasons.add(f"{due.reason} of job {due.job} due")
            if not reasons or self._stopping:
                continue

            await self._run_cycle(store, resolver, reasons)
            if self._git is not None and self.options.commit_status:
                self.liveness.working("git commit")
                back = self._git.commit_back(push=not self._stopping)
                committed = await self._run_step(back, "tc-git-commit")
                if not committed.cancelled() and committed.result():
                    self.wake("a rebase brought commits from the remote")

    def _delay(
        self, due: Due | None, next_pull: float | None, retry: float | None = None
    ) -> float | None:
        delays = [] if retry is None else [retry]
        if due is not None:
            seconds = (due.at - datetime.now(UTC)).total_seconds() + WAKE_MARGIN
            delays.append(max(seconds, MIN_TIMER_DELAY))
            log.debug("Next: %s of job %s at %s", due.reason, due.job, due.at)
        if next_pull is not None:
            delays.append(max(next_pull - time.monotonic(), 0.0))
        return min(delays) if delays else None

    async def _sleep(self, delay: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    def _take_reasons(self) -> set[str]:
        reasons = self._reasons
        self._reasons = set()
        self._wake.clear()
        return reasons

    async def _run_cycle(
        self, store: Store, resolver: SecretResolver, reasons: set[str]
    ) -> None:
        self._cycles += 1
        log.debug("Cycle %d: %s", self._cycles, "; ".join(sorted(reasons)))
        cycle = Cycle(
            self.options.job_dir,
            self.settings,
            resolver=resolver,
            transport=self._transport,
            due_only=True,
        )
        self._last_cycle = datetime.now(UTC)
        self.liveness.working("cycle")
        started = time.monotonic()
        task = await self._run_step(
            cycle.run(store, allow_empty=self.options.allow_empty),
            f"tc-cycle-{self._cycles}",
        )

        seconds = time.monotonic() - started
        outcome = _log_outcome(task, seconds)
        self.metrics.observe_cycle(seconds, outcome)
        self.liveness.cycle_finished()
        snapshot = _read_snapshot(store)
        if snapshot is not None:
            self.metrics.set_counts(snapshot.counts())


def _read_snapshot(store: Store) -> Snapshot | None:
    try:
        return Snapshot.read(store)
    except (TCError, sqlite3.Error) as error:
        log.error(
            "Cannot read the state database: %s; trying again in %g s",
            error,
            STORE_RETRY_SECONDS,
        )
        return None


def _log_outcome(task: asyncio.Task[CycleReport], seconds: float) -> str:
    if task.cancelled():
        log.warning(
            "Cycle cancelled after %.1f s; its finished writes are kept, and the "
            "next cycle goes on from them",
            seconds,
        )
        return "cancelled"
    error = task.exception()
    if isinstance(error, TCError):
        log.error("Cycle failed after %.1f s: %s", seconds, error)
        return "error"
    if error is not None:
        log.error("Cycle failed unexpectedly", exc_info=error)
        return "error"
    report = task.result()
    changes = [c for c in report.plan.changes if c.action != "noop"]
    written = len(report.status_files_written)
    level = logging.INFO if changes or written else logging.DEBUG
    log.log(
        level,
        "Cycle done in %.2f s: %d jobs, %d plan changes, %d status files written",
        seconds,
        len(report.jobs),
        len(changes),
        written,
    )
    return "ok"
