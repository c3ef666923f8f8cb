"""`tc watch` options: what reaches the daemon's core, and the usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler import daemon
from reconciler.cli import app
from reconciler.daemon import DaemonRunningError, WatchOptions
from reconciler.health import HttpAddress

runner = CliRunner()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[WatchOptions]:
    """Replace the daemon's core with a recorder of its options."""
    seen: list[WatchOptions] = []
    monkeypatch.setattr(daemon, "watch", seen.append)
    monkeypatch.delenv("TC_STATE_DIR", raising=False)
    return seen


def test_options_reach_core(calls: list[WatchOptions], tmp_path: Path) -> None:
    """Every option is passed on, with its unit, to one core call."""
    result = runner.invoke(
        app,
        [
            "watch",
            str(tmp_path),
            "--git-pull",
            "60",
            "--commit-status",
            "--push",
            "--git-author",
            "Bot <bot@example.org>",
            "--grace",
            "5",
            "--http",
            "9102",
            "--stuck-after",
            "120",
            "--allow-empty",
            "--state-dir",
            str(tmp_path / "state"),
        ],
    )

    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    options = calls[0]
    assert options.job_dir == tmp_path
    assert options.git_pull_seconds == 60
    assert options.commit_status
    assert options.push
    assert options.git_identity == "Bot <bot@example.org>"
    assert options.grace_seconds == 5
    assert options.http == HttpAddress("127.0.0.1", 9102)
    assert options.stuck_after == 120
    assert options.allow_empty
    assert options.settings.state_dir == tmp_path / "state"


def test_defaults_reach_core(
    calls: list[WatchOptions], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without options: no git, no HTTP server, 30 s grace, TC_STATE_DIR used."""
    monkeypatch.setenv("TC_STATE_DIR", str(tmp_path / "env-state"))

    result = runner.invoke(app, ["watch"])

    assert result.exit_code == 0, result.output
    options = calls[0]
    assert options.job_dir == Path("jobs.d")
    assert options.git_pull_seconds is None
    assert not options.commit_status
    assert not options.push
    assert options.http is None
    assert options.grace_seconds == 30
    assert options.settings.state_dir == tmp_path / "env-state"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["--push"], "--push needs --commit-status", id="push-alone"),
        pytest.param(["--http", ":9102"], "write HOST:PORT", id="http-no-host"),
        pytest.param(["--http", "x:99999"], "invalid port", id="http-port"),
        pytest.param(["--git-author", "bot"], "'Name <email>'", id="author"),
        pytest.param(["--git-pull", "0"], "not in the range x>=1", id="pull-zero"),
        pytest.param(["--log-format", "xml"], "unknown log format", id="log-format"),
    ],
)
def test_usage_errors_exit_2(
    calls: list[WatchOptions], arguments: list[str], message: str
) -> None:
    """A wrong option is a usage error that names the fix; the core is not called."""
    result = runner.invoke(app, ["watch", *arguments])

    assert result.exit_code == 2
    # rich draws the error in a box; its borders split the text into lines.
    assert message in " ".join(result.output.replace("│", " ").split())
    assert calls == []


def test_running_daemon_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second daemon prints the core's message and exits 1."""

    def refuse(options: WatchOptions) -> None:
        raise DaemonRunningError("another tc watch (PID 4242) is running")

    monkeypatch.setattr(daemon, "watch", refuse)

    result = runner.invoke(app, ["watch"])

    assert result.exit_code == 1
    assert "Error: another tc watch (PID 4242) is running" in result.output


def test_watch_has_help() -> None:
    """tc watch --help names every option."""
    result = runner.invoke(app, ["watch", "--help"])

    assert result.exit_code == 0
    for option in ("--git-pull", "--commit-status", "--push", "--grace", "--http"):
        assert option in result.output
