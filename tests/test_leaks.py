"""No secret value leaks: logs, output, status files, exceptions, the database.

Real values are stored with `tc secret set`, and a full cycle runs against the
simulator with a 401 from each API, error bodies that echo the token, a
failed job search and a crash with a traceback. Every place a value could end
up is then searched for it, and for every 12-character piece of it, so that a
clipped echo counts too.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from cryptography.fernet import Fernet

from reconciler import service
from reconciler.errors import TCError
from reconciler.secrets import SecretVault
from reconciler.settings import Settings
from reconciler.store import Store

if TYPE_CHECKING:
    from reconciler.simulator import Simulator

REPO_ROOT = Path(__file__).resolve().parents[1]
OPENAI_KEY = "sk-leakcheck-OPENAI-9f8e7d6c5b4a3210"
STALE_OPENAI_KEY = "sk-leakcheck-STALE-0a1b2c3d4e5f6789"
KEBOOLA_TOKEN = "1357-24680-leakcheckKEBOOLAtoken77"
SECRET_KEY = Fernet.generate_key().decode()
WINDOW = 12
COMPONENT = "kds-team.app-custom-python"

Start = Callable[..., "Simulator"]


def pieces(value: str) -> list[str]:
    """Return every ``WINDOW``-character piece of a value."""
    return [value[i : i + WINDOW] for i in range(len(value) - WINDOW + 1)]


def assert_no_leak(where: str, text: str | bytes, values: Iterable[str]) -> None:
    """Fail when any value, or a piece of it, appears in ``text``."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    for value in values:
        for piece in pieces(value):
            assert piece.encode() not in data, f"{where} contains {piece!r}"


SECRETS = (OPENAI_KEY, STALE_OPENAI_KEY, KEBOOLA_TOKEN, SECRET_KEY)


def openai_echo(status: int, batch_id: str) -> dict[str, Any]:
    """Return a fault whose OpenAI error body echoes the API key."""
    body = {
        "error": {
            "message": f"Incorrect API key provided: {OPENAI_KEY}. Key: {OPENAI_KEY}",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    return {
        "service": "openai",
        "path": f"^/v1/batches/{batch_id}$",
        "status": status,
        "body": json.dumps(body),
    }


def keboola_echo(status: int, method: str, path: str) -> dict[str, Any]:
    """Return a fault whose Keboola error body echoes the token."""
    body = {
        "error": f"Invalid access token {KEBOOLA_TOKEN}",
        "code": status,
        "exceptionId": "exc-leak",
        "status": "error",
        "context": {
            "token": KEBOOLA_TOKEN,
            "header": f"X-StorageApi-Token: {KEBOOLA_TOKEN}",
        },
    }
    return {
        "service": "keboola",
        "method": method,
        "path": path,
        "status": status,
        "times": 1,
        "body": json.dumps(body),
    }


def scenario() -> dict[str, Any]:
    """Return the leak scenario: faults on both APIs that echo the secrets."""
    done = {"script": [{"status": "completed"}]}
    return {
        "openai": {
            "api_keys": [OPENAI_KEY],
            "batches": {
                "batch_ok_a": done,
                "batch_ok_b": done,
                "batch_auth": done,
                "batch_echo": done,
                "batch_stale": done,
            },
        },
        "keboola": {
            "tokens": [KEBOOLA_TOKEN],
            "job_seconds": 0.2,
            "configurations": [{"component": COMPONENT, "id": "12345"}],
        },
        "faults": [
            openai_echo(401, "batch_auth"),
            openai_echo(500, "batch_echo"),
            keboola_echo(401, "POST", "^/jobs$"),
            keboola_echo(500, "POST", "^/jobs$"),
            keboola_echo(500, "GET", "^/search/jobs"),
        ],
    }


def job_document(
    base_url: str, batch_id: str, api_key: str = "secret:openai-prod"
) -> dict[str, Any]:
    """Return a job file pointing at the simulator, tokens from the store."""
    return {
        "batch_ids": [batch_id],
        "openai": {"api_key": api_key, "base_url": f"{base_url}/v1"},
        "keboola": {
            "stack_url": base_url,
            "queue_url": base_url,
            "token": "secret:keboola-prod",
            "component_id": COMPONENT,
            "configuration_id": "12345",
        },
    }


JOBS = {
    "openai-auth": ("batch_auth", "secret:openai-prod"),
    "openai-echo": ("batch_echo", "secret:openai-prod"),
    "openai-stale": ("batch_stale", "secret:openai-stale"),
    "keboola-a": ("batch_ok_a", "secret:openai-prod"),
    "keboola-b": ("batch_ok_b", "secret:openai-prod"),
    "missing": ("batch_ok_a", "secret:absent"),
}


class Workspace:
    """A job directory, a state directory and `tc` run against a simulator."""

    def __init__(self, root: Path, sim: Simulator) -> None:
        self.root = root
        self.sim = sim
        self.jobs = root / "jobs.d"
        self.jobs.mkdir(parents=True)
        self.state = root / "state"
        self.outputs: list[tuple[str, str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        """Return the child environment: the key in TC_SECRET_KEY, loopback allowed."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("TC_") and "proxy" not in name.lower()
        }
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            NO_COLOR="1",
            TC_STATE_DIR=str(self.state),
            TC_ALLOWED_HOSTS="127.0.0.1",
            TC_SECRET_KEY=SECRET_KEY,
            TC_HTTP_TIMEOUT="5",
            TC_RETRY_ATTEMPTS="2",
            TC_RETRY_MAX_WAIT="0",
            TC_TRIGGER_LOOKUP_GRACE="0",
        )
        env.update(extra)
        return env

    def run(
        self, argv: list[str], stdin: str = "", **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a command, keep its output for the leak scan, return it."""
        result = subprocess.run(
            argv,
            cwd=self.root,
            env=self.env(**env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.outputs.append((" ".join(argv[2:5]), result.stdout + result.stderr))
        return result

    def tc(
        self, *args: str, stdin: str = "", **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `tc` from this source tree."""
        return self.run([sys.executable, "-m", "reconciler", *args], stdin, **env)

    def store_secrets(self) -> None:
        """Store the real values with `tc secret set`."""
        for name, value, kind in (
            ("openai-prod", OPENAI_KEY, "openai"),
            ("openai-stale", STALE_OPENAI_KEY, "openai"),
            ("keboola-prod", KEBOOLA_TOKEN, "keboola"),
        ):
            result = self.tc("secret", "set", name, "--type", kind, stdin=value)
            assert result.returncode == 0, result.stderr

    def write_jobs(self, jobs: dict[str, tuple[str, str]]) -> None:
        """Write the job files."""
        for name, (batch_id, api_key) in jobs.items():
            document = job_document(self.sim.url, batch_id, api_key)
            (self.jobs / f"{name}.yaml").write_text(yaml.safe_dump(document))

    def scan(self) -> None:
        """Search every output, file and the database for the secret values."""
        for where, text in self.outputs:
            assert_no_leak(f"output of {where}", text, SECRETS)
        for path in sorted(self.jobs.iterdir()):
            assert_no_leak(str(path), path.read_bytes(), SECRETS)
        for path in sorted(self.state.iterdir()):
            assert_no_leak(str(path), path.read_bytes(), SECRETS)
        # The log contains the fault rules, whose bodies are the test's own echoes.
        requests = [
            {k: v for k, v in entry.items() if k != "fault"}
            for entry in self.sim.requests()
        ]
        assert_no_leak("simulator request log", json.dumps(requests), SECRETS)


@pytest.fixture
def workspace(tmp_path: Path, simulator: Start) -> Workspace:
    """Return a workspace with the secrets stored and the leak scenario running."""
    ws = Workspace(tmp_path / "work", simulator(scenario()))
    ws.store_secrets()
    ws.write_jobs(JOBS)
    return ws


def test_full_cycle_leaks_nothing(workspace: Workspace) -> None:
    """A cycle with 401s, echoing bodies and a failed search leaks no value."""
    first = workspace.tc("apply", "jobs.d", "--log-level", "debug")
    second = workspace.tc(
        "apply", "jobs.d", "--log-level", "debug", "--log-format", "json"
    )
    status_json = workspace.tc("status", "-o", "json")
    workspace.tc("status", "-o", "yaml")
    workspace.tc("status")
    for name in JOBS:
        workspace.tc("status", name)
    workspace.tc("secret", "list", "-o", "json")
    workspace.tc("diff", "jobs.d")
    workspace.tc("validate", "jobs.d")

    # The faults were met, so the scan below covers those paths.
    assert first.returncode == 1
    assert second.returncode == 1
    jobs = {job["job"]: job for job in json.loads(status_json.stdout)}
    assert "401" in jobs["openai-auth"]["batches"][0]["error"]
    assert jobs["openai-echo"]["batches"][0]["error"]
    assert "401" in jobs["openai-stale"]["batches"][0]["error"]
    assert "tc secret set absent" in jobs["missing"]["error"]["message"]
    keboola = [jobs["keboola-a"], jobs["keboola-b"]]
    states = sorted(job["trigger"]["state"] for job in keboola)
    assert states in (["rejected", "unknown"], ["accepted", "rejected"]), states
    statuses = [r["status"] for r in workspace.sim.requests()]
    assert 401 in statuses
    assert 500 in statuses
    json_lines = [json.loads(line) for line in second.stderr.splitlines() if line]
    assert any(entry["level"] == "error" for entry in json_lines)
    workspace.scan()


def test_wrong_key_leaks_nothing(workspace: Workspace) -> None:
    """A run under another key names the secrets and shows no value or key."""
    other_key = Fernet.generate_key().decode()
    result = workspace.tc("apply", "jobs.d", TC_SECRET_KEY=other_key)
    status = workspace.tc("status", "-o", "json", TC_SECRET_KEY=other_key)

    assert result.returncode == 1
    messages = [job["error"]["message"] for job in json.loads(status.stdout)]
    assert any("secret openai-prod cannot be decrypted" in m for m in messages)
    assert "Traceback" not in result.stderr
    assert_no_leak(
        "apply under another key", result.stdout + result.stderr, [other_key]
    )
    workspace.scan()


CRASH_DRIVER = """
import sys
import reconciler.keboola_api as keboola_api

original_init = keboola_api.KeboolaClient.__init__

def crashing_init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    raise RuntimeError("simulated crash while the token is in scope")

keboola_api.KeboolaClient.__init__ = crashing_init
from reconciler.cli import main
sys.argv[0] = "tc"
main()
"""


def test_crash_traceback_leaks_nothing(workspace: Workspace) -> None:
    """An unexpected exception prints a traceback without any value."""
    workspace.write_jobs({"crash": ("batch_ok_a", "secret:openai-prod")})
    for name in JOBS:
        (workspace.jobs / f"{name}.yaml").unlink()

    result = workspace.run(
        [sys.executable, "-c", CRASH_DRIVER, "apply", "jobs.d", "--log-level", "debug"]
    )

    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "simulated crash while the token is in scope" in result.stderr
    workspace.scan()


def test_in_process_logs_and_errors_leak_nothing(
    tmp_path: Path,
    simulator: Start,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Log records, tracebacks in them and raised errors carry no value."""
    sim = simulator(scenario())
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    for name, (batch_id, api_key) in JOBS.items():
        document = job_document(sim.url, batch_id, api_key)
        (jobs / f"{name}.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.setenv("TC_SECRET_KEY", SECRET_KEY)
    settings = Settings(
        state_dir=tmp_path / "state",
        allowed_hosts=frozenset({"127.0.0.1"}),
        retry_attempts=1,
        retry_max_wait=0.0,
        trigger_lookup_grace=0.0,
        http_timeout=5.0,
    )
    store = Store.open(settings.state_dir)
    try:
        vault = SecretVault(store)
        vault.put("openai-prod", OPENAI_KEY, "openai")
        vault.put("openai-stale", STALE_OPENAI_KEY, "openai")
        vault.put("keboola-prod", KEBOOLA_TOKEN, "keboola")
    finally:
        store.close()

    from reconciler import trigger

    async def crashing_advance(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unexpected failure in the trigger")

    caplog.set_level(logging.DEBUG)
    report = service.apply(jobs, settings)
    monkeypatch.setattr(trigger.TriggerProtocol, "advance", crashing_advance)
    crashed = service.apply(jobs, settings)
    raised: list[str] = []
    try:
        service.status(settings, ["no-such-job"])
    except TCError as error:
        raised.append(str(error))

    formatter = logging.Formatter()
    texts = []
    # The in-process simulator logs the fault rules, echoes included.
    records = [
        r for r in caplog.records if not r.name.startswith("reconciler.simulator")
    ]
    for record in records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
        texts.append(repr(record.args))
    assert any("Traceback" in text for text in texts)
    for job in [*report.jobs, *crashed.jobs]:
        texts.extend([job.error or "", *job.messages])
    texts.extend(raised)
    texts.append(repr(settings))
    assert_no_leak("in-process logs and errors", "\n".join(texts), SECRETS)
