"""Allowed hosts from the state directory's settings file, merged with the env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reconciler.errors import SettingsError
from reconciler.settings import SETTINGS_FILE_NAME, Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_settings(state_dir: Path, text: str) -> None:
    """Write the settings file of a state directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / SETTINGS_FILE_NAME).write_text(text, encoding="utf-8")


class TestSettingsFile:
    def test_file_hosts_merge_with_env(self, tmp_path: Path) -> None:
        """Hosts of the file and of TC_ALLOWED_HOSTS are both allowed."""
        write_settings(
            tmp_path, "allowed_hosts:\n  - 127.0.0.1\n  - Queue.Example.COM.\n"
        )
        settings = Settings.from_env(
            {"TC_STATE_DIR": str(tmp_path), "TC_ALLOWED_HOSTS": "proxy.internal"}
        )
        assert settings.allowed_hosts == {
            "127.0.0.1",
            "queue.example.com",
            "proxy.internal",
        }

    def test_missing_or_empty_file_allows_nothing(self, tmp_path: Path) -> None:
        """Without a file, or with an empty one, only the env counts."""
        assert Settings.from_env({"TC_STATE_DIR": str(tmp_path)}).allowed_hosts == set()
        write_settings(tmp_path, "# nothing yet\n")
        assert Settings.from_env({"TC_STATE_DIR": str(tmp_path)}).allowed_hosts == set()

    def test_state_dir_override_swaps_file(self, tmp_path: Path) -> None:
        """--state-dir brings its own file's hosts and keeps the env's."""
        first, second = tmp_path / "first", tmp_path / "second"
        write_settings(first, "allowed_hosts: [first.example]\n")
        write_settings(second, "allowed_hosts: [second.example]\n")
        settings = Settings.from_env(
            {"TC_STATE_DIR": str(first), "TC_ALLOWED_HOSTS": "env.example"}
        )
        moved = settings.with_overrides(state_dir=second)
        assert moved.allowed_hosts == {"env.example", "second.example"}

    def test_env_host_survives_override(self, tmp_path: Path) -> None:
        """A host in both the env and the old file stays allowed after a move."""
        first, second = tmp_path / "first", tmp_path / "second"
        write_settings(first, "allowed_hosts: [shared.example]\n")
        settings = Settings.from_env(
            {"TC_STATE_DIR": str(first), "TC_ALLOWED_HOSTS": "shared.example"}
        )
        assert settings.with_overrides(state_dir=second).allowed_hosts == {
            "shared.example"
        }

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("allowed_hosts: a.example\n", "must be a list", id="scalar"),
            pytest.param("hosts: [a]\n", "unknown key(s) hosts", id="unknown-key"),
            pytest.param(
                "allowed_hosts: ['http://a.example']\n", "without scheme", id="scheme"
            ),
            pytest.param(
                "allowed_hosts: ['a.example:8080']\n", "without scheme, port", id="port"
            ),
            pytest.param("allowed_hosts: [1]\n", "is not a host name", id="number"),
            pytest.param("- a\n- b\n", "must be a mapping", id="list"),
            pytest.param(
                "allowed_hosts: [a]\nallowed_hosts: [b]\n", "appears twice", id="dup"
            ),
            pytest.param("allowed_hosts: [a\n", "", id="bad-yaml"),
        ],
    )
    def test_invalid_file_is_reported(
        self, tmp_path: Path, text: str, expected: str
    ) -> None:
        """An invalid settings file is an error that names the file."""
        write_settings(tmp_path, text)
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({"TC_STATE_DIR": str(tmp_path)})
        assert SETTINGS_FILE_NAME in str(caught.value)
        assert expected in str(caught.value)

    def test_ipv6_loopback_is_a_host(self, tmp_path: Path) -> None:
        """An IPv6 address is a host name, not a host with a port."""
        write_settings(tmp_path, "allowed_hosts: ['::1']\n")
        assert Settings.from_env({"TC_STATE_DIR": str(tmp_path)}).allowed_hosts == {
            "::1"
        }


def test_validate_uses_settings_file(tmp_path: Path) -> None:
    """`tc validate` accepts a loopback host that only the settings file allows."""
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    document = {
        "batch_ids": ["batch_a"],
        "openai": {"api_key": "secret:o", "base_url": "http://127.0.0.1:9/v1"},
        "keboola": {
            "stack_url": "http://127.0.0.1:9",
            "queue_url": "http://127.0.0.1:9",
            "token": "secret:k",
            "component_id": "c",
            "configuration_id": "1",
        },
    }
    (jobs / "local.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TC_") and "proxy" not in name.lower()
    }
    env.update(PYTHONPATH=str(REPO_ROOT), NO_COLOR="1")
    command = [sys.executable, "-m", "reconciler", "validate", "jobs.d"]

    def validate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    refused = validate()
    assert refused.returncode == 1
    assert "TC_ALLOWED_HOSTS=127.0.0.1" in refused.stderr

    write_settings(tmp_path / ".tc", "allowed_hosts: [127.0.0.1]\n")
    accepted = validate()
    assert accepted.returncode == 0, accepted.stderr
    assert "ok" in accepted.stdout
