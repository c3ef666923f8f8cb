"""`tc secret`: real runs as a subprocess, plus option checks on a mocked core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from reconciler import cli_secrets, secret_ops
from reconciler.cli import app
from reconciler.secrets import KEY_FILE_NAME, KeyRotation

REPO_ROOT = Path(__file__).resolve().parents[1]
OPENAI_KEY = "sk-cli-test-5e0a1b2c3d"
KEBOOLA_TOKEN = "4321-98765-cliTokenPart"


def child_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """Return a child's environment: no TC_* or proxy settings, this source tree."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TC_") and "proxy" not in name.lower()
    }
    env.update(PYTHONPATH=str(REPO_ROOT), NO_COLOR="1", TC_STATE_DIR=str(state_dir))
    env.update(extra)
    return env


def tc(
    cwd: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `tc` from this source tree with ``stdin`` piped in."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env=child_env(cwd / "state", **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_job(directory: Path, name: str, api_key: str, token: str) -> Path:
    """Write a valid job file that refers to the given secret references."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "batch_ids": ["batch_a"],
        "openai": {"api_key": api_key},
        "keboola": {
            "stack_url": "https://connection.keboola.com",
            "token": token,
            "component_id": "kds-team.app-custom-python",
            "configuration_id": "1",
        },
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


class TestSecretSet:
    def test_set_from_stdin_then_list(self, tmp_path: Path) -> None:
        """A value piped in is stored; list shows name, type and dates only."""
        stored = tc(
            tmp_path,
            "secret",
            "set",
            "openai-prod",
            "--type",
            "openai",
            stdin=OPENAI_KEY + "\n",
        )
        assert stored.returncode == 0, stored.stderr
        assert stored.stdout == (
            "Secret openai-prod stored; refer to it as secret:openai-prod.\n"
        )

        listed = tc(tmp_path, "secret", "list", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [sorted(row) for row in rows] == [
            ["created_at", "name", "type", "updated_at"]
        ]
        assert rows[0]["name"] == "openai-prod"
        assert rows[0]["type"] == "openai"
        assert OPENAI_KEY not in listed.stdout + stored.stdout + stored.stderr
        key_file = tmp_path / "state" / KEY_FILE_NAME
        assert key_file.stat().st_mode & 0o777 == 0o600

    def test_set_replaces_value(self, tmp_path: Path) -> None:
        """Setting an existing name replaces its value and reports it."""
        tc(tmp_path, "secret", "set", "a", stdin="first-value")
        replaced = tc(tmp_path, "secret", "set", "a", stdin="second-value")
        assert replaced.returncode == 0, replaced.stderr
        assert "Secret a replaced" in replaced.stdout

    def test_value_argument_is_usage_error(self, tmp_path: Path) -> None:
        """A value on the command line is not accepted at all."""
        result = tc(tmp_path, "secret", "set", "a", OPENAI_KEY)
        assert result.returncode == 2
        assert not (tmp_path / "state" / "state.db").exists()

    def test_empty_stdin_is_error(self, tmp_path: Path) -> None:
        """No value on standard input says how to give one."""
        result = tc(tmp_path, "secret", "set", "a", stdin="")
        assert result.returncode == 1
        assert "no value on standard input" in result.stderr

    def test_table_lists_without_values(self, tmp_path: Path) -> None:
        """The table shows one line per secret and never a value."""
        tc(
            tmp_path,
            "secret",
            "set",
            "keboola-prod",
            "--type",
            "keboola",
            stdin=KEBOOLA_TOKEN,
        )
        listed = tc(tmp_path, "secret", "list")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split() == ["NAME", "TYPE", "CREATED", "UPDATED"]
        assert lines[1].split()[:2] == ["keboola-prod", "keboola"]
        assert KEBOOLA_TOKEN not in listed.stdout

    def test_list_without_database(self, tmp_path: Path) -> None:
        """Listing before anything is stored prints a hint and creates nothing."""
        listed = tc(tmp_path, "secret", "list")
        assert listed.returncode == 0
        assert "No secrets" in listed.stdout
        assert not (tmp_path / "state").exists()


class TestSecretRemove:
    def test_rm_refuses_referenced_secret(self, tmp_path: Path) -> None:
        """A secret that a job file refers to is kept unless --force is given."""
        tc(tmp_path, "secret", "set", "openai-prod", stdin=OPENAI_KEY)
        job = write_job(
            tmp_path / "jobs.d", "catalogue", "secret:openai-prod", "env:TOKEN"
        )

        refused = tc(tmp_path, "secret", "rm", "openai-prod")
        assert refused.returncode == 1
        assert "referred to by jobs.d/catalogue.yaml" in refused.stderr
        assert "--force" in refused.stderr

        forced = tc(tmp_path, "secret", "rm", "openai-prod", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "Secret openai-prod removed." in forced.stdout
        assert f"{job.relative_to(tmp_path)} still refers" in forced.stderr
        assert json.loads(tc(tmp_path, "secret", "list", "-o", "json").stdout) == []

    def test_rm_ignores_similar_names(self, tmp_path: Path) -> None:
        """A job file naming secret:a-b does not hold back secret a."""
        tc(tmp_path, "secret", "set", "a", stdin=OPENAI_KEY)
        write_job(tmp_path / "jobs.d", "other", "secret:a-b", "secret:a.c")
        removed = tc(tmp_path, "secret", "rm", "a")
        assert removed.returncode == 0, removed.stderr

    def test_rm_checks_invalid_files_too(self, tmp_path: Path) -> None:
        """An invalid job file that mentions the secret still blocks removal."""
        tc(tmp_path, "secret", "set", "a", stdin=OPENAI_KEY)
        jobs = tmp_path / "jobs"
        jobs.mkdir()
        (jobs / "broken.yaml").write_text(
            "batch_ids: []\nopenai: {api_key: secret:a}\n", encoding="utf-8"
        )
        refused = tc(tmp_path, "secret", "rm", "a", "--dir", "jobs")
        assert refused.returncode == 1
        assert "jobs/broken.yaml" in refused.stderr

    def test_rm_unknown_secret(self, tmp_path: Path) -> None:
        """Removing an unknown secret fails and names it."""
        (tmp_path / "jobs.d").mkdir()
        tc(tmp_path, "secret", "set", "a", stdin=OPENAI_KEY)
        result = tc(tmp_path, "secret", "rm", "b")
        assert result.returncode == 1
        assert "no secret named b" in result.stderr

    def test_rm_without_job_directory(self, tmp_path: Path) -> None:
        """Without a readable job directory rm requests --dir or --force."""
        tc(tmp_path, "secret", "set", "a", stdin=OPENAI_KEY)
        result = tc(tmp_path, "secret", "rm", "a")
        assert result.returncode == 1
        assert "pass --dir with the job directory, or --force" in result.stderr


class TestRotateKey:
    def test_rotate_with_key_file(self, tmp_path: Path) -> None:
        """Rotation with the key file replaces the file; secrets still resolve."""
        tc(tmp_path, "secret", "set", "a", stdin=OPENAI_KEY)
        key_file = tmp_path / "state" / KEY_FILE_NAME
        old = key_file.read_bytes()

        rotated = tc(tmp_path, "secret", "rotate-key")

        assert rotated.returncode == 0, rotated.stderr
        assert "Key rotated: 1 secrets encrypted under the new key." in rotated.stdout
        assert key_file.read_bytes() != old
        new_key = key_file.read_text().strip()
        assert new_key not in rotated.stdout + rotated.stderr

    def test_rotate_environment_key_from_stdin(self, tmp_path: Path) -> None:
        """With TC_SECRET_KEY the new key comes from standard input."""
        old_key = Fernet.generate_key().decode()
        new_key = Fernet.generate_key().decode()
        tc(tmp_path, "secret", "set", "a", stdin=OPENAI_KEY, TC_SECRET_KEY=old_key)

        rotated = tc(
            tmp_path,
            "secret",
            "rotate-key",
            stdin=new_key + "\n",
            TC_SECRET_KEY=old_key,
        )

        assert rotated.returncode == 0, rotated.stderr
        assert "set TC_SECRET_KEY to the new key" in rotated.stderr
        assert new_key not in rotated.stdout + rotated.stderr
        assert old_key not in rotated.stdout + rotated.stderr
        assert not (tmp_path / "state" / KEY_FILE_NAME).exists()
        again = tc(tmp_path, "secret", "set", "b", stdin="x1", TC_SECRET_KEY=new_key)
        assert again.returncode == 0, again.stderr

    def test_rotate_with_new_key_file(self, tmp_path: Path) -> None:
        """--new-key-file gives the new key, which the key file then contains."""
        tc(tmp_path, "secret", "set", "a", stdin=OPENAI_KEY)
        new_key = Fernet.generate_key().decode()
        key_source = tmp_path / "new.key"
        key_source.write_text(new_key + "\n", encoding="ascii")

        rotated = tc(tmp_path, "secret", "rotate-key", "--new-key-file", "new.key")

        assert rotated.returncode == 0, rotated.stderr
        key_file = tmp_path / "state" / KEY_FILE_NAME
        assert key_file.read_text().strip() == new_key

    def test_invalid_new_key_is_refused(self, tmp_path: Path) -> None:
        """A new key that is not a Fernet key changes nothing."""
        tc(tmp_path, "secret", "set", "a", stdin=OPENAI_KEY)
        (tmp_path / "bad.key").write_text("too-short\n", encoding="ascii")
        result = tc(tmp_path, "secret", "rotate-key", "--new-key-file", "bad.key")
        assert result.returncode == 1
        assert "the new key is not a valid Fernet key" in result.stderr
        assert "too-short" not in result.stderr


class TestMockedCore:
    def test_set_passes_options(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Name, type, value and state directory reach the core."""
        calls: list[tuple[Any, ...]] = []

        def fake_set(settings: Any, name: str, value: str, kind: str | None) -> bool:
            calls.append((settings.state_dir, name, value, kind))
            return True

        monkeypatch.setattr(secret_ops, "set_secret", fake_set)
        monkeypatch.setattr(cli_secrets, "_stdin_is_terminal", lambda: False)
        result = CliRunner().invoke(
            app,
            ["secret", "set", "n1", "--type", "keboola", "--state-dir", str(tmp_path)],
            input="value-1\n",
        )
        assert result.exit_code == 0, result.output
        assert calls == [(tmp_path, "n1", "value-1", "keboola")]

    def test_prompt_hides_input(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a terminal the value is asked twice at a prompt that does not echo it."""
        captured: list[str] = []

        def fake_set(settings: Any, name: str, value: str, kind: str | None) -> bool:
            captured.append(value)
            return True

        monkeypatch.setattr(secret_ops, "set_secret", fake_set)
        monkeypatch.setattr(cli_secrets, "_stdin_is_terminal", lambda: True)
        result = CliRunner().invoke(
            app,
            ["secret", "set", "n1", "--state-dir", str(tmp_path)],
            input="typed-value\ntyped-value\n",
        )
        assert result.exit_code == 0, result.output
        assert captured == ["typed-value"]
        assert "Value of secret n1" in result.output
        assert "typed-value" not in result.output

    def test_rotate_passes_key_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--new-key-file's content reaches the core."""
        given: list[str | None] = []

        def fake_rotate(settings: Any, new_key: str | None) -> KeyRotation:
            given.append(new_key)
            return KeyRotation(0, tmp_path / KEY_FILE_NAME)

        monkeypatch.setattr(secret_ops, "rotate_key", fake_rotate)
        (tmp_path / "k").write_text("key-text\n", encoding="ascii")
        result = CliRunner().invoke(
            app, ["secret", "rotate-key", "--new-key-file", str(tmp_path / "k")]
        )
        assert result.exit_code == 0, result.output
        assert given == ["key-text\n"]

    def test_every_secret_command_has_help(self) -> None:
        """Each `tc secret` command documents itself."""
        for command in ("set", "list", "rm", "rotate-key"):
            result = CliRunner().invoke(app, ["secret", command, "--help"])
            assert result.exit_code == 0, command
            assert "Usage" in result.output
