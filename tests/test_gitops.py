"""Git steps of the daemon against real repositories with a local bare remote."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from reconciler.gitops import (
    DEFAULT_IDENTITY,
    GitError,
    GitSync,
    Repository,
    StatusChange,
    commit_message,
    find_repository,
    parse_identity,
    run_git,
)
from reconciler.gitops import (
    _clean_stderr as clean_stderr,
)

JOB_TEXT = "batch_ids: [batch_a]\n"


def git(directory: Path, *args: str) -> str:
    """Run git in ``directory`` as a person would, and return its output."""
    result = subprocess.run(
        ["git", "-C", str(directory), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def clone(remote: Path, target: Path, who: str) -> Path:
    """Clone ``remote`` into ``target`` with a committer named ``who``."""
    git(remote.parent, "clone", "--quiet", str(remote), str(target))
    git(target, "config", "user.name", who)
    git(target, "config", "user.email", f"{who}@example.com")
    return target


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """Return a bare remote whose main branch holds ``jobs.d/alpha.yaml``."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = clone(bare, tmp_path / "seed", "seed")
    git(seed, "checkout", "--quiet", "-b", "main")
    (seed / "jobs.d").mkdir()
    (seed / "jobs.d" / "alpha.yaml").write_text(JOB_TEXT)
    git(seed, "add", ".")
    git(seed, "commit", "--quiet", "-m", "Add alpha")
    git(seed, "push", "--quiet", "-u", "origin", "main")
    return bare


def repository(work: Path) -> Repository:
    return Repository(work, work / "jobs.d")


def write_status(work: Path, job: str, status: str) -> None:
    path = work / "jobs.d" / f"{job}.status.yaml"
    path.write_text(f"# generated\njob: {job}\nstatus: {status}\n")


async def test_commit_takes_only_status_files(tmp_path: Path, remote: Path) -> None:
    """A staged job file stays staged and out of the status commit."""
    work = clone(remote, tmp_path / "work", "person")
    (work / "jobs.d" / "alpha.yaml").write_text(JOB_TEXT + "suspend: true\n")
    git(work, "add", "jobs.d/alpha.yaml")
    (work / "notes.txt").write_text("draft\n")
    write_status(work, "alpha", "active")

    subject = await repository(work).commit_status()

    assert subject == "tc: status of alpha (active) [skip ci]"
    committed = git(work, "show", "--name-only", "--format=%an <%ae>|%cn", "HEAD")
    assert committed.splitlines()[0] == f"{DEFAULT_IDENTITY}|TeckoChecker"
    assert committed.split("\n", 2)[2].split() == ["jobs.d/alpha.status.yaml"]
    status = git(work, "status", "--porcelain").splitlines()
    assert "M  jobs.d/alpha.yaml" in status
    assert "?? notes.txt" in status
    assert not any("status.yaml" in line for line in status)


async def test_commit_names_added_and_removed(tmp_path: Path, remote: Path) -> None:
    """Deleted and new status files go into one commit with their status."""
    work = clone(remote, tmp_path / "work", "person")
    write_status(work, "alpha", "completed")
    write_status(work, "old", "active")
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "status")
    (work / "jobs.d" / "old.status.yaml").unlink()
    write_status(work, "alpha", "failed")
    write_status(work, "beta", "invalid")

    subject = await repository(work).commit_status()

    assert subject == (
        "tc: status of alpha (failed), beta (invalid), old (removed) [skip ci]"
    )
    assert git(work, "status", "--porcelain") == ""


async def test_commit_without_changes_is_none(tmp_path: Path, remote: Path) -> None:
    """Nothing changed, nothing committed."""
    work = clone(remote, tmp_path / "work", "person")
    head = git(work, "rev-parse", "HEAD")

    assert await repository(work).commit_status() is None
    assert git(work, "rev-parse", "HEAD") == head


async def test_commit_uses_given_identity(tmp_path: Path, remote: Path) -> None:
    """--git-author sets author and committer."""
    work = clone(remote, tmp_path / "work", "person")
    write_status(work, "alpha", "active")
    identity = parse_identity("Status Bot <bot@example.org>")

    await Repository(work, work / "jobs.d", identity=identity).commit_status()

    who = git(work, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip()
    assert who == "Status Bot <bot@example.org>|Status Bot <bot@example.org>"


def test_message_lists_many_jobs_in_body() -> None:
    """Past five jobs the subject counts the rest and the body lists all."""
    changes = [
        StatusChange(f"jobs.d/j{i}.status.yaml", f"j{i}", "active") for i in range(7)
    ]

    subject, body = commit_message(changes)

    assert subject == (
        "tc: status of j0 (active), j1 (active), j2 (active), j3 (active), "
        "j4 (active) and 2 more [skip ci]"
    )
    assert body.splitlines() == [f"j{i} (active)" for i in range(7)]


async def test_push_rebases_after_concurrent_push(tmp_path: Path, remote: Path) -> None:
    """A push rejected because the remote moved on is rebased and retried."""
    work = clone(remote, tmp_path / "work", "daemon")
    person = clone(remote, tmp_path / "person", "person")
    (person / "jobs.d" / "beta.yaml").write_text(JOB_TEXT)
    git(person, "add", ".")
    git(person, "commit", "--quiet", "-m", "Add beta")
    git(person, "push", "--quiet")
    write_status(work, "alpha", "active")
    repo = repository(work)
    await repo.commit_status()

    rebases = await repo.push()

    assert rebases == 1
    log = git(remote, "log", "--format=%s", "main").splitlines()
    assert log == ["tc: status of alpha (active) [skip ci]", "Add beta", "Add alpha"]
    assert await repo.unpushed() == 0


async def test_push_gives_up_on_conflict(tmp_path: Path, remote: Path) -> None:
    """A rebase that conflicts is aborted and reported, the commit stays local."""
    work = clone(remote, tmp_path / "work", "daemon")
    person = clone(remote, tmp_path / "person", "person")
    write_status(person, "alpha", "paused")
    git(person, "add", ".")
    git(person, "commit", "--quiet", "-m", "Hand-written status")
    git(person, "push", "--quiet")
    write_status(work, "alpha", "active")
    repo = repository(work)
    await repo.commit_status()

    with pytest.raises(GitError, match=r"git pull --rebase .* failed"):
        await repo.push()

    assert not (work / ".git" / "rebase-merge").exists()
    assert await repo.unpushed() == 1


async def test_pull_reports_job_file_changes(tmp_path: Path, remote: Path) -> None:
    """A pull returns True for job files and False for status files alone."""
    work = clone(remote, tmp_path / "work", "daemon")
    person = clone(remote, tmp_path / "person", "person")
    repo = repository(work)
    write_status(person, "alpha", "active")
    git(person, "add", ".")
    git(person, "commit", "--quiet", "-m", "status only")
    git(person, "push", "--quiet")

    assert await repo.pull() is False
    assert await repo.pull() is False

    (person / "jobs.d" / "alpha.yaml").write_text(JOB_TEXT + "suspend: true\n")
    git(person, "commit", "--quiet", "-am", "Suspend alpha")
    git(person, "push", "--quiet")

    assert await repo.pull() is True
    assert "suspend: true" in (work / "jobs.d" / "alpha.yaml").read_text()


async def test_pull_failure_logged_once(
    tmp_path: Path, remote: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Diverged history fails the pull; the same error is logged once."""
    work = clone(remote, tmp_path / "work", "daemon")
    person = clone(remote, tmp_path / "person", "person")
    (person / "jobs.d" / "beta.yaml").write_text(JOB_TEXT)
    git(person, "add", ".")
    git(person, "commit", "--quiet", "-m", "Add beta")
    git(person, "push", "--quiet")
    (work / "jobs.d" / "gamma.yaml").write_text(JOB_TEXT)
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "Local commit")
    outcomes: list[tuple[str, str]] = []
    sync = GitSync(
        repository(work), observer=lambda op, out: outcomes.append((op, out))
    )

    with caplog.at_level(logging.INFO, logger="reconciler.gitops"):
        first = await sync.pull()
        second = await sync.pull()

    assert first is False
    assert second is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "git pull --ff-only --no-rebase --quiet failed" in errors[0].getMessage()
    assert "last good job files stay in force" in errors[0].getMessage()
    assert outcomes == [("pull", "error"), ("pull", "error")]
    assert not (work / "jobs.d" / "beta.yaml").exists()


async def test_commit_back_pushes_left_commits(tmp_path: Path, remote: Path) -> None:
    """Commits left unpushed by an earlier failure go out with the next one."""
    work = clone(remote, tmp_path / "work", "daemon")
    write_status(work, "alpha", "active")
    repo = repository(work)
    await repo.commit_status()
    sync = GitSync(repo, push=True)

    rebased = await sync.commit_back()

    assert rebased is False
    assert git(remote, "log", "-1", "--format=%s", "main").startswith("tc: status")


async def test_find_repository_outside_git(tmp_path: Path) -> None:
    """A directory outside any work tree is a GitError naming the command."""
    plain = tmp_path / "plain"
    plain.mkdir()

    with pytest.raises(GitError, match="git rev-parse --show-toplevel failed"):
        await find_repository(plain)


async def test_run_git_times_out(tmp_path: Path) -> None:
    """A hanging git command is stopped and named in the error."""
    with pytest.raises(GitError, match=r"git -c alias.hang=!sleep 5 hang timed out"):
        await run_git(tmp_path, "-c", "alias.hang=!sleep 5", "hang", timeout=0.3)


def test_stderr_hides_url_password() -> None:
    """A password in a remote URL never reaches a message."""
    text = "fatal: unable to access 'https://bot:s3cr3t-token@git.example.com/r/':\n"

    cleaned = clean_stderr(text)

    assert "s3cr3t-token" not in cleaned
    assert "https://bot:***@git.example.com/r/" in cleaned


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Bot <bot@example.org>", ("Bot", "bot@example.org"), id="plain"),
        pytest.param("  Status Bot  <s@x.io> ", ("Status Bot", "s@x.io"), id="spaces"),
    ],
)
def test_identity_parses(text: str, expected: tuple[str, str]) -> None:
    """``Name <email>`` splits into its parts."""
    identity = parse_identity(text)

    assert (identity.name, identity.email) == expected


@pytest.mark.parametrize("text", ["bot@example.org", "Bot", "<a@b>", "A <b> <c>"])
def test_identity_rejects_other_forms(text: str) -> None:
    """Anything but ``Name <email>`` is rejected with the expected form."""
    with pytest.raises(ValueError, match="'Name <email>'"):
        parse_identity(text)
