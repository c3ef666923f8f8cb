"""Git for the daemon: pull the job repository, commit status files back.

``tc watch --git-pull SECONDS`` runs ``git pull --ff-only`` in the repository
that contains the job directory. ``--commit-status`` commits the status files
of that directory that differ from HEAD, and nothing else. The files are
named on the command line (``git commit --only -- PATHS``), so whatever a
person staged stays staged and out of the commit. ``--push`` pushes to the
branch's upstream and, when the remote moved on, rebases on it and tries
again a bounded number of times.

git runs as a subprocess with a timeout, no terminal prompt and the C locale,
so that its messages can be matched. A failed command raises ``GitError``,
which names the command and carries git's standard error, cut short and with
any password in a URL replaced by ``***``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from reconciler.errors import TCError

log = logging.getLogger(__name__)

GIT_TIMEOUT = 60.0
"""Seconds one git command may run before it is stopped."""

PUSH_ATTEMPTS = 3
"""Pushes tried per commit-back, with a rebase on the remote between two."""

DEFAULT_IDENTITY = "TeckoChecker <teckochecker@localhost>"
STATUS_SUFFIX = ".status.yaml"
SUBJECT_JOBS = 5
"""Jobs named in a commit subject; the body lists every job."""

STDERR_LIMIT = 500
_TERMINATE_WAIT = 2.0
_URL_PASSWORD = re.compile(r"(://[^/@\s:]*:)[^@\s/]*@")
_NON_FAST_FORWARD = ("non-fast-forward", "fetch first", "[rejected]")


class GitError(TCError):
    """A git command failed or timed out.

    Attributes:
        command: the git arguments, without ``git`` itself.
        stderr: git's standard error, cut short and redacted.
    """

    def __init__(self, message: str, command: Sequence[str], stderr: str) -> None:
        super().__init__(message)
        self.command = tuple(command)
        self.stderr = stderr


@dataclass(frozen=True)
class Identity:
    """Author and committer of the status commits."""

    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


def parse_identity(text: str) -> Identity:
    """Parse ``Name <email>``.

    Raises:
        ValueError: the text is not in that form.
    """
    match = re.fullmatch(r"\s*([^<>]+?)\s*<([^<>\s]+)>\s*", text)
    if match is None:
        msg = f"invalid git identity {text!r}; write it as 'Name <email>'"
        raise ValueError(msg)
    return Identity(match.group(1), match.group(2))


def git_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment git runs with: never a prompt, C locale messages."""
    env = dict(os.environ if base is None else base)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    env["LANGUAGE"] = "C"
    # ssh must not ask for a passphrase or a host key on a terminal either.
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


def _clean_stderr(text: str) -> str:
    text = _URL_PASSWORD.sub(r"\1***@", text.strip())
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(text) > STDERR_LIMIT:
        text = text[: STDERR_LIMIT - 3] + "..."
    return text


async def run_git(
    directory: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = GIT_TIMEOUT,
) -> str:
    """Run ``git -C DIRECTORY ARGS`` and return its standard output.

    A timeout or a cancellation stops git and its children with SIGTERM,
    which lets git remove its lock files, and with SIGKILL two seconds later.

    Raises:
        GitError: git is not installed, exited with a status other than 0,
            or ran longer than ``timeout`` seconds.
    """
    command = ("-C", str(directory), *args)
    command_text = "git " + " ".join(args)
    try:
        process = await asyncio.create_subprocess_exec(
            "git",
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else git_environment(),
            # A group of its own: a timeout stops git's children too (hooks,
            # ssh, credential helpers), and a Ctrl-C meant for the daemon
            # does not reach git.
            start_new_session=True,
        )
    except OSError as error:
        msg = f"{command_text} cannot start: {error.strerror}; install git"
        raise GitError(msg, args, "") from error
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        await _stop(process)
        msg = f"{command_text} timed out after {timeout:g} s in {directory}"
        raise GitError(msg, args, "") from None
    except asyncio.CancelledError:
        await _stop(process)
        raise
    if process.returncode != 0:
        detail = _clean_stderr(stderr.decode("utf-8", "replace"))
        msg = f"{command_text} failed in {directory} (exit {process.returncode})" + (
            f": {detail}" if detail else ""
        )
        raise GitError(msg, args, detail)
    return stdout.decode("utf-8", "replace")


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Stop git's process group and read its pipes to the end."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            async with asyncio.timeout(_TERMINATE_WAIT):
                await process.communicate()
            return
        except TimeoutError:
            continue


async def find_repository(directory: Path, *, timeout: float = GIT_TIMEOUT) -> Path:
    """Return the top directory of the git work tree that contains ``directory``.

    Raises:
        GitError: ``directory`` is not inside a git work tree.
    """
    output = await run_git(directory, "rev-parse", "--show-toplevel", timeout=timeout)
    return Path(output.strip())


@dataclass(frozen=True)
class StatusChange:
    """A status file that differs from HEAD: added, modified or deleted."""

    path: str
    job: str
    status: str


class Repository:
    """The git work tree that contains the job directory.

    Args:
        root: the top directory of the work tree.
        job_dir: the job directory, inside ``root``.
        identity: author and committer of status commits.
        timeout: seconds each git command may take.
    """

    def __init__(
        self,
        root: Path,
        job_dir: Path,
        *,
        identity: Identity | None = None,
        timeout: float = GIT_TIMEOUT,
    ) -> None:
        self.root = root
        relative = os.path.relpath(os.path.realpath(job_dir), os.path.realpath(root))
        self.job_dir = PurePosixPath(Path(relative).as_posix())
        self.identity = identity or parse_identity(DEFAULT_IDENTITY)
        self.timeout = timeout
        self._env = git_environment()
        self._commit_env = {
            **self._env,
            "GIT_AUTHOR_NAME": self.identity.name,
            "GIT_AUTHOR_EMAIL": self.identity.email,
            "GIT_COMMITTER_NAME": self.identity.name,
            "GIT_COMMITTER_EMAIL": self.identity.email,
        }

    async def git(self, *args: str, commit_env: bool = False) -> str:
        """Run one git command in the work tree and return its output."""
        env = self._commit_env if commit_env else self._env
        return await run_git(self.root, *args, env=env, timeout=self.timeout)

    async def head(self) -> str:
        """Return the commit id of HEAD."""
        return (await self.git("rev-parse", "HEAD")).strip()

    async def pull(self) -> bool:
        """Fast-forward to the upstream branch.

        Returns:
            True when the pull changed a job file of the job directory, so a
            cycle should run. Changes to status files alone return False.

        Raises:
            GitError: the pull failed (diverged history, local changes in
                the way, unreachable remote, no upstream).
        """
        before = await self.head()
        await self.git("pull", "--ff-only", "--no-rebase", "--quiet")
        after = await self.head()
        if before == after:
            return False
        return await self._job_files_changed(before, after)

    async def _job_files_changed(self, before: str, after: str) -> bool:
        output = await self.git(
            "diff", "--name-only", "-z", before, after, "--", self._pathspec()
        )
        for name in filter(None, output.split("\0")):
            path = PurePosixPath(name)
            if path.parent == self.job_dir and not path.name.endswith(STATUS_SUFFIX):
                return True
        return False

    def _pathspec(self) -> str:
        return str(self.job_dir) if str(self.job_dir) != "." else "."

    async def changed_status_files(self) -> list[StatusChange]:
        """Return the status files of the job directory that differ from HEAD."""
        output = await self.git(
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--no-renames",
            "--",
            self._pathspec(),
        )
        changes = []
        for entry in filter(None, output.split("\0")):
            path = PurePosixPath(entry[3:])
            if path.parent != self.job_dir or not path.name.endswith(STATUS_SUFFIX):
                continue
            job = path.name.removesuffix(STATUS_SUFFIX)
            changes.append(StatusChange(str(path), job, self._status_of(path)))
        return sorted(changes, key=lambda change: change.job)

    def _status_of(self, path: PurePosixPath) -> str:
        file = self.root / path
        if not file.exists():
            return "removed"
        try:
            document = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return "unreadable"
        status = document.get("status") if isinstance(document, dict) else None
        return str(status) if status else "unknown"

    async def commit_status(self) -> str | None:
        """Commit the changed status files, and only them.

        Returns:
            The subject of the new commit, or None when nothing changed.

        Raises:
            GitError: git could not stage or commit the files.
        """
        changes = await self.changed_status_files()
        if not changes:
            return None
        paths = [change.path for change in changes]
        subject, body = commit_message(changes)
        # Staging first lets --only take new and deleted files too; --only then
        # commits exactly these paths and leaves every other staged entry alone.
        await self.git("add", "--all", "--", *paths)
        message = subject + (f"\n\n{body}" if body else "")
        await self.git(
            "-c",
            "commit.gpgsign=false",
            "commit",
            "--only",
            "--no-verify",
            "--quiet",
            "--message",
            message,
            "--",
            *paths,
            commit_env=True,
        )
        return subject

    async def unpushed(self) -> int:
        """Return how many commits HEAD is ahead of its upstream branch."""
        output = await self.git("rev-list", "--count", "@{upstream}..HEAD")
        return int(output.strip() or 0)

    async def push(self, *, attempts: int = PUSH_ATTEMPTS) -> int:
        """Push HEAD to its upstream branch, rebasing when the remote moved on.

        Returns:
            The number of rebases that were needed.

        Raises:
            GitError: a push failed for another reason than a non-fast-forward,
                a rebase failed (it is aborted), or every attempt was rejected.
        """
        rebases = 0
        for attempt in range(1, attempts + 1):
            try:
                await self.git("-c", "push.default=upstream", "push", "--quiet")
                return rebases
            except GitError as error:
                if not any(mark in error.stderr for mark in _NON_FAST_FORWARD):
                    raise
                if attempt == attempts:
                    msg = (
                        f"git push was rejected {attempts} times because the "
                        f"remote moved on; the last error: {error}"
                    )
                    raise GitError(msg, error.command, error.stderr) from error
            log.info(
                "git push rejected (attempt %d of %d): the remote has new commits; "
                "rebasing on them and pushing again",
                attempt,
                attempts,
            )
            await self._rebase()
            rebases += 1
        return rebases

    async def _rebase(self) -> None:
        try:
            await self.git(
                "pull", "--rebase", "--no-autostash", "--quiet", commit_env=True
            )
        except GitError:
            with contextlib.suppress(GitError):
                await self.git("rebase", "--abort")
            raise


def commit_message(changes: Sequence[StatusChange]) -> tuple[str, str]:
    """Return the subject and body of a status commit.

    The subject names up to ``SUBJECT_JOBS`` jobs with their status and ends
    with ``[skip ci]``; the body lists every job when there are more.
    """
    named = [f"{change.job} ({change.status})" for change in changes]
    command_text = ", ".join(named[:SUBJECT_JOBS])
    if len(named) > SUBJECT_JOBS:
        command_text += f" and {len(named) - SUBJECT_JOBS} more"
    subject = f"tc: status of {command_text} [skip ci]"
    body = "\n".join(named) if len(named) > SUBJECT_JOBS else ""
    return subject, body


class _OnceLog:
    """The error log of one git operation: each error once until its text changes."""

    def __init__(self, operation: str, consequence: str) -> None:
        self.operation = operation
        self.consequence = consequence
        self.last: str | None = None

    def failed(self, error: GitError) -> None:
        text = str(error)
        if text == self.last:
            log.debug("%s still fails: %s", self.operation, text)
            return
        self.last = text
        log.error(
            "%s: %s; %s (logged once until the error changes)",
            self.operation,
            text,
            self.consequence,
        )

    def succeeded(self) -> None:
        if self.last is not None:
            log.info("%s works again", self.operation)
        self.last = None


GitObserver = Callable[[str, str], None]
"""A callable that receives a git operation (pull, commit, push) and its outcome."""


class GitSync:
    """The daemon's git steps, each failure logged once per distinct error.

    Args:
        repository: the work tree of the job directory.
        push: push status commits after committing them.
        observer: called after each operation, for the metrics.
    """

    def __init__(
        self,
        repository: Repository,
        *,
        push: bool = False,
        observer: GitObserver | None = None,
    ) -> None:
        self.repository = repository
        self.push_enabled = push
        self._observer = observer
        self._pull_log = _OnceLog("git pull", "the last good job files stay in force")
        self._commit_log = _OnceLog(
            "Committing status files", "they are committed with the next change"
        )
        self._push_log = _OnceLog("git push", "the next commit-back pushes again")

    def _observe(self, operation: str, outcome: str) -> None:
        if self._observer is not None:
            self._observer(operation, outcome)

    async def pull(self) -> bool:
        """Pull and return True when job files changed; log a failure, return False."""
        try:
            changed = await self.repository.pull()
        except GitError as error:
            self._observe("pull", "error")
            self._pull_log.failed(error)
            return False
        self._observe("pull", "ok")
        self._pull_log.succeeded()
        if changed:
            log.info("git pull changed job files in %s", self.repository.root)
        return changed

    async def commit_back(self, *, push: bool | None = None) -> bool:
        """Commit changed status files, then push unpushed commits if enabled.

        Returns:
            True when a rebase brought in commits from the remote, so the job
            files may have changed.
        """
        try:
            subject = await self.repository.commit_status()
        except GitError as error:
            self._observe("commit", "error")
            self._commit_log.failed(error)
            subject = None
        else:
            self._commit_log.succeeded()
            if subject is not None:
                self._observe("commit", "ok")
                log.info("Committed status files: %s", subject)
        if not (self.push_enabled if push is None else push):
            return False
        return await self._push()

    async def _push(self) -> bool:
        try:
            if await self.repository.unpushed() == 0:
                return False
            rebases = await self.repository.push()
        except GitError as error:
            self._observe("push", "error")
            self._push_log.failed(error)
            return False
        self._observe("push", "ok")
        self._push_log.succeeded()
        log.info("Pushed status commits (%d rebase(s) on the remote)", rebases)
        return rebases > 0
