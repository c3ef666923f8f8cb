"""Test harness of the end-to-end tests: a simulator process, a workspace and `tc`.

Every test starts its own simulator (``python -m reconciler.simulator``) on a
free 127.0.0.1 port and runs ``tc`` as a subprocess in a temporary directory
with its own SQLite state database. Both processes import the package from
this source tree through ``PYTHONPATH``, so the tests check the code of this
checkout whatever ``.venv`` has installed. The tests read what the simulator
received through its control API under ``/_sim``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

# Secret values that the simulator accepts. The job files name only the
# environment variables, and the tests check that no value ever leaks.
OPENAI_KEY = "sk-e2e-openai-key-7f3c9a51d2"
KEBOOLA_TOKEN = "9876-54321-e2eKeboolaSecretPart0042"
OPENAI_KEY_VAR = "E2E_OPENAI_KEY"
KEBOOLA_TOKEN_VAR = "E2E_KEBOOLA_TOKEN"

COMPONENT = "kds-team.app-custom-python"
CONFIGURATION_ID = "12345"
# The variables that configurations written for the original TeckoChecker define.
TECKOCHECKER_VARIABLES = (
    "batch_ids_completed",
    "batch_ids_failed",
    "batch_count_total",
    "batch_count_completed",
    "batch_count_failed",
)
STATUS_FILE_KEYS = (
    "job",
    "revision",
    "status",
    "summary",
    "batches",
    "trigger",
    "error",
)

# Seconds a `tc` command or the simulator's start may take before a test fails.
COMMAND_TIMEOUT = 60.0
START_TIMEOUT = 15.0


def terminal(status: str) -> dict[str, Any]:
    """Return a simulator batch that is in ``status`` from its first read."""
    return {"script": [{"status": status}]}


def running() -> dict[str, Any]:
    """Return a simulator batch that stays ``in_progress`` for an hour."""
    return {
        "script": [
            {"status": "in_progress", "seconds": 3600},
            {"status": "completed"},
        ]
    }


def configuration(
    configuration_id: str = CONFIGURATION_ID, **settings: Any
) -> dict[str, Any]:
    """Return a scenario configuration that defines the five TeckoChecker variables."""
    return {
        "component": COMPONENT,
        "id": configuration_id,
        "variables": list(TECKOCHECKER_VARIABLES),
        **settings,
    }


def scenario(
    batches: dict[str, dict[str, Any]],
    *,
    configurations: Sequence[dict[str, Any]] | None = None,
    job_seconds: float = 0.0,
    search_lag_seconds: float = 0.0,
    faults: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Return a simulator scenario that accepts the test key and token.

    Keboola jobs finish as they are created unless ``job_seconds`` is above 0.
    """
    return {
        "openai": {"api_keys": [OPENAI_KEY], "batches": batches},
        "keboola": {
            "tokens": [KEBOOLA_TOKEN],
            "job_seconds": job_seconds,
            "search_lag_seconds": search_lag_seconds,
            "configurations": list(configurations or [configuration()]),
        },
        "faults": list(faults),
    }


def source_env() -> dict[str, str]:
    """Return the environment of a child process, with no ``TC_*`` or proxy settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TC_") and "proxy" not in name.lower()
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["NO_COLOR"] = "1"
    return env


class SimulatorProcess:
    """A simulator started as a child process, steered through its control API."""

    def __init__(self, directory: Path, scenario_data: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        scenario_path = directory / "scenario.yaml"
        scenario_path.write_text(yaml.safe_dump(scenario_data), encoding="utf-8")
        port_file = directory / "port"
        self.log_path = directory / "simulator.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reconciler.simulator",
                    "--scenario",
                    str(scenario_path),
                    "--port-file",
                    str(port_file),
                    "--log-level",
                    "WARNING",
                ],
                env=source_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.port = self._wait_for_port(port_file)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, trust_env=False, timeout=10.0)

    def _wait_for_port(self, port_file: Path) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                return int(port_file.read_text())
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        log = self.log_path.read_text(errors="replace")
        raise RuntimeError(
            f"The simulator did not start within {START_TIMEOUT:g} s. Its log:\n{log}"
        )

    def stop(self) -> None:
        """Stop the simulator process and close the control client."""
        if hasattr(self, "client"):
            self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _json(self, method: str, path: str, body: object = None) -> Any:
        response = self.client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def requests(self) -> list[dict[str, Any]]:
        """Return the log of API requests the simulator received."""
        result: list[dict[str, Any]] = self._json("GET", "/_sim/requests")
        return result

    def count_requests(self, method: str, path: str) -> int:
        """Return how many logged requests had this method and exact path."""
        return sum(
            1
            for entry in self.requests()
            if entry["method"] == method and entry["path"] == path
        )

    def keboola_jobs(self) -> list[dict[str, Any]]:
        """Return every Keboola job created, with the request body received."""
        result: list[dict[str, Any]] = self._json("GET", "/_sim/keboola/jobs")
        return result

    def keboola_jobs_of(self, job_name: str) -> list[dict[str, Any]]:
        """Return the Keboola jobs whose trigger names the TeckoChecker job."""
        return [
            record
            for record in self.keboola_jobs()
            if variable_values(record).get("teckochecker_job") == job_name
        ]

    def put_batches(self, batches: dict[str, dict[str, Any]]) -> None:
        """Add or replace batches. A replaced batch starts its timeline again."""
        self._json("POST", "/_sim/batches", batches)

    def reset(self) -> None:
        """Clear the request log and the fault rules."""
        self._json("POST", "/_sim/reset")


def variable_values(record: dict[str, Any]) -> dict[str, str]:
    """Return the ``variableValuesData`` of a created Keboola job as a mapping."""
    data = record["body"].get("variableValuesData") or {}
    return {item["name"]: item["value"] for item in data.get("values", [])}


class Workspace:
    """A working directory with ``jobs.d``, a state directory and a simulator."""

    def __init__(self, root: Path, simulator: SimulatorProcess) -> None:
        self.root = root
        self.sim = simulator
        self.job_dir = root / "jobs.d"
        self.job_dir.mkdir(parents=True)
        self.state_dir = root / "state"
        self.env = source_env()
        self.env.update(
            {
                "TC_STATE_DIR": str(self.state_dir),
                "TC_ALLOWED_HOSTS": "127.0.0.1",
                "TC_HTTP_TIMEOUT": "10",
                "TC_RETRY_MAX_WAIT": "1",
                OPENAI_KEY_VAR: OPENAI_KEY,
                KEBOOLA_TOKEN_VAR: KEBOOLA_TOKEN,
            }
        )

    def job_path(self, name: str) -> Path:
        """Return the path of a job file."""
        return self.job_dir / f"{name}.yaml"

    def status_path(self, name: str) -> Path:
        """Return the path of a job's status file."""
        return self.job_dir / f"{name}.status.yaml"

    def job_document(
        self,
        batch_ids: Sequence[str],
        *,
        configuration_id: str = CONFIGURATION_ID,
        api_key: str = f"env:{OPENAI_KEY_VAR}",
        token: str = f"env:{KEBOOLA_TOKEN_VAR}",
        poll_interval_seconds: int | None = None,
        suspend: bool | None = None,
    ) -> dict[str, Any]:
        """Return the mapping of a job file that points at the simulator."""
        document: dict[str, Any] = {
            "batch_ids": list(batch_ids),
            "openai": {"api_key": api_key, "base_url": f"{self.sim.url}/v1"},
            "keboola": {
                "stack_url": self.sim.url,
                "queue_url": self.sim.url,
                "token": token,
                "component_id": COMPONENT,
                "configuration_id": configuration_id,
            },
        }
        if poll_interval_seconds is not None:
            document["poll_interval_seconds"] = poll_interval_seconds
        if suspend is not None:
            document["suspend"] = suspend
        return document

    def write_job(self, name: str, batch_ids: Sequence[str], **options: Any) -> Path:
        """Write ``jobs.d/NAME.yaml`` from ``job_document(batch_ids, **options)``."""
        document = self.job_document(batch_ids, **options)
        return self.write_text(name, yaml.safe_dump(document, sort_keys=False))

    def write_text(self, name: str, text: str) -> Path:
        """Write ``jobs.d/NAME.yaml`` with exactly this text."""
        path = self.job_path(name)
        path.write_text(text, encoding="utf-8")
        return path

    def command(self, *args: str) -> list[str]:
        """Return the argument list that runs ``tc`` from the source tree."""
        return [sys.executable, "-m", "reconciler", *args]

    def tc(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``tc`` with ``args`` in the workspace and return the finished process."""
        return subprocess.run(
            self.command(*args),
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def start_tc(self, *args: str) -> subprocess.Popen[str]:
        """Start ``tc`` with ``args`` without waiting for it."""
        return subprocess.Popen(
            self.command(*args),
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def start_aligned(self, count: int, *args: str) -> list[subprocess.Popen[str]]:
        """Start ``count`` runs of ``tc`` and release them together at the same step.

        Each process is stopped with SIGSTOP as soon as ``/proc`` shows the
        state database among its open files, which is before it reads the job
        files, and SIGCONT then resumes all of them at once. So their cycles
        overlap however long each took to start. The database must exist.
        """
        database = str((self.state_dir / "state.db").resolve())
        processes = [self.start_tc(*args) for _ in range(count)]
        waiting = list(processes)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while waiting:
                if time.monotonic() > deadline:
                    pytest.fail("tc did not open the state database in time")
                for process in list(waiting):
                    if process.poll() is not None:
                        pytest.fail(
                            f"tc exited with {process.returncode} before opening "
                            "the state database"
                        )
                    if database in _open_files(process.pid):
                        process.send_signal(signal.SIGSTOP)
                        waiting.remove(process)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGCONT)
        return processes

    def apply(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``tc apply`` with extra ``args``."""
        return self.tc("apply", *args)

    def read_status(self, name: str) -> dict[str, Any]:
        """Parse a job's status file."""
        document: dict[str, Any] = yaml.safe_load(self.status_path(name).read_text())
        return document

    def status_json(self, *names: str) -> list[dict[str, Any]]:
        """Return the parsed output of ``tc status -o json``."""
        result = self.tc("status", "-o", "json", *names)
        assert result.stdout, f"tc status printed nothing; stderr:\n{result.stderr}"
        jobs: list[dict[str, Any]] = json.loads(result.stdout)
        return jobs

    def jobs_by_name(self) -> dict[str, dict[str, Any]]:
        """Return ``tc status -o json`` as a mapping from job name to job."""
        return {job["job"]: job for job in self.status_json()}

    def apply_until(
        self, condition: Callable[[], bool], *, timeout: float = 20.0
    ) -> None:
        """Run ``tc apply`` until ``condition`` is true or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.apply()
            if condition():
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"condition not met after {timeout:g} s of tc apply; last "
                    f"output:\n{result.stdout}\n{result.stderr}"
                )
            time.sleep(0.1)


def _open_files(pid: int) -> list[str]:
    """Return the paths a process has open, read from ``/proc``."""
    directory = Path(f"/proc/{pid}/fd")
    paths = []
    try:
        descriptors = os.listdir(directory)
    except OSError:
        return []
    for descriptor in descriptors:
        try:
            paths.append(os.readlink(directory / descriptor))
        except OSError:
            # The descriptor closed between listing and reading it.
            continue
    return paths
