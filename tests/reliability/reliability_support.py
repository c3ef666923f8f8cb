"""Helpers of the reliability tests: a workspace with its own simulator and `tc`.

Each workspace has a job directory, a state directory and an in-process
simulator on a free 127.0.0.1 port. `tc` runs as a subprocess with
``python -m reconciler`` and ``PYTHONPATH`` set to this checkout, so the
tests check the source tree and can kill the process with a failpoint
(``TC_FAILPOINT``). The job files name the key and the token only through
``env:`` references.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.simulator import Simulator

REPO_ROOT = Path(__file__).resolve().parents[2]

OPENAI_KEY = "sk-reliability-openai-key-5c1e0b7a93"
KEBOOLA_TOKEN = "2468-13579-reliabilityKeboolaSecret0077"
OPENAI_KEY_VAR = "RELIABILITY_OPENAI_KEY"
KEBOOLA_TOKEN_VAR = "RELIABILITY_KEBOOLA_TOKEN"

COMPONENT = "kds-team.app-custom-python"
CONFIGURATION_ID = "12345"
TRIGGER_ID_VARIABLE = "teckochecker_trigger_id"
JOB_NAME_VARIABLE = "teckochecker_job"
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

# Settings of every `tc` run unless a test overrides them. A short HTTP
# timeout keeps "a response that never comes" fast and makes a trigger lease
# last http_timeout + 30 s, yet 2 s leave room for a loaded machine. Three
# attempts with backoff are enough to see a retry.
DEFAULT_SETTINGS = {
    "TC_ALLOWED_HOSTS": "127.0.0.1",
    "TC_HTTP_TIMEOUT": "2",
    "TC_RETRY_ATTEMPTS": "3",
    "TC_RETRY_MAX_WAIT": "5",
    "TC_TRIGGER_LOOKUP_GRACE": "2",
}
RETRY_ATTEMPTS = int(DEFAULT_SETTINGS["TC_RETRY_ATTEMPTS"])
HTTP_TIMEOUT = float(DEFAULT_SETTINGS["TC_HTTP_TIMEOUT"])
# Extra time a trigger lease lasts beyond the HTTP timeout, as in
# reconciler.trigger.LEASE_MARGIN.
LEASE_MARGIN_SECONDS = 30.0

# Seconds one `tc` command may take before the test fails.
COMMAND_TIMEOUT = 120.0


def terminal(status: str = "completed") -> dict[str, Any]:
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


def scenario(
    batches: Mapping[str, dict[str, Any]],
    *,
    job_seconds: float = 0.2,
    search_lag_seconds: float = 0.0,
    faults: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Return a simulator scenario that accepts the test key and token."""
    return {
        "openai": {"api_keys": [OPENAI_KEY], "batches": dict(batches)},
        "keboola": {
            "tokens": [KEBOOLA_TOKEN],
            "job_seconds": job_seconds,
            "search_lag_seconds": search_lag_seconds,
            "configurations": [
                {
                    "component": COMPONENT,
                    "id": CONFIGURATION_ID,
                    "variables": list(TECKOCHECKER_VARIABLES),
                }
            ],
        },
        "faults": list(faults),
    }


def child_environment() -> dict[str, str]:
    """Return this process's environment without ``TC_*`` and proxy settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TC_") and "proxy" not in name.lower()
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["NO_COLOR"] = "1"
    return env


@dataclass(frozen=True)
class Run:
    """A finished `tc` command."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def killed(self) -> bool:
        """True when a failpoint ended the process with SIGKILL."""
        return self.returncode == -9

    def describe(self) -> str:
        """Return the command, exit code and output, for assertion messages."""
        return (
            f"tc {' '.join(self.args)} exited {self.returncode} after "
            f"{self.seconds:.1f} s\n--- stdout\n{self.stdout[-3000:]}"
            f"\n--- stderr\n{self.stderr[-3000:]}"
        )


class Workspace:
    """A job directory, a state directory and a simulator for one test."""

    def __init__(
        self,
        root: Path,
        simulator: Simulator,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.sim = simulator
        self.url = simulator.url
        self.job_dir = root / "jobs.d"
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = root / "state"
        self.env = child_environment()
        self.env.update(DEFAULT_SETTINGS)
        self.env.update(
            {
                "TC_STATE_DIR": str(self.state_dir),
                OPENAI_KEY_VAR: OPENAI_KEY,
                KEBOOLA_TOKEN_VAR: KEBOOLA_TOKEN,
            }
        )
        self.env.update(settings or {})

    @property
    def database(self) -> Path:
        """Path of the state database."""
        return self.state_dir / "state.db"

    # Job files

    def job_document(
        self, batch_ids: Sequence[str], url: str | None = None
    ) -> dict[str, Any]:
        """Return the mapping of a job file that points at a simulator.

        ``url`` is the base URL of the simulator, the workspace's own one
        when None.
        """
        url = url or self.url
        return {
            "batch_ids": list(batch_ids),
            "openai": {
                "api_key": f"env:{OPENAI_KEY_VAR}",
                "base_url": f"{url}/v1",
            },
            "keboola": {
                "stack_url": url,
                "queue_url": url,
                "token": f"env:{KEBOOLA_TOKEN_VAR}",
                "component_id": COMPONENT,
                "configuration_id": CONFIGURATION_ID,
            },
        }

    def job_text(self, batch_ids: Sequence[str], url: str | None = None) -> str:
        """Return the YAML text of a job file that points at a simulator."""
        return yaml.safe_dump(self.job_document(batch_ids, url), sort_keys=False)

    def write_job(
        self, name: str, batch_ids: Sequence[str], url: str | None = None
    ) -> Path:
        """Write ``jobs.d/NAME.yaml`` for ``batch_ids`` on the simulator at ``url``."""
        text = self.job_text(batch_ids, url)
        return self.write_bytes(f"{name}.yaml", text.encode())

    def write_bytes(self, filename: str, data: bytes) -> Path:
        """Write a file into the job directory with exactly these bytes."""
        path = self.job_dir / filename
        path.write_bytes(data)
        return path

    def status_path(self, name: str) -> Path:
        """Return the path of a job's status file."""
        return self.job_dir / f"{name}.status.yaml"

    # Running tc

    def command(self, *args: str) -> list[str]:
        """Return the argument list that runs `tc` from the source tree."""
        return [sys.executable, "-m", "reconciler", *args]

    def environment(
        self, failpoint: str | None = None, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Return the environment of one `tc` run."""
        env = dict(self.env)
        if failpoint is not None:
            env["TC_FAILPOINT"] = failpoint
        env.update(extra or {})
        return env

    def tc(
        self,
        *args: str,
        failpoint: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> Run:
        """Run `tc` with ``args`` in the workspace and wait for it."""
        started = time.monotonic()
        completed = subprocess.run(
            self.command(*args),
            cwd=self.root,
            env=self.environment(failpoint, extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=preexec_fn,
        )
        return Run(
            tuple(args),
            completed.returncode,
            completed.stdout,
            completed.stderr,
            time.monotonic() - started,
        )

    def apply(self, *args: str, **options: Any) -> Run:
        """Run ``tc apply JOB_DIR`` with extra ``args``."""
        return self.tc("apply", str(self.job_dir), *args, **options)

    def start_apply(self, *args: str) -> subprocess.Popen[str]:
        """Start ``tc apply JOB_DIR`` without waiting for it."""
        return subprocess.Popen(
            self.command("apply", str(self.job_dir), *args),
            cwd=self.root,
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def apply_until(
        self,
        condition: Callable[[], bool],
        *,
        timeout: float = 60.0,
        pause: float = 0.5,
    ) -> list[Run]:
        """Run ``tc apply`` until ``condition`` returns True and return the runs.

        Fails the test after ``timeout`` seconds, with the last run's output.
        """
        deadline = time.monotonic() + timeout
        runs = []
        while True:
            runs.append(self.apply())
            if condition():
                return runs
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"condition not met after {timeout:g} s and {len(runs)} runs "
                    f"of tc apply; the last one:\n{runs[-1].describe()}"
                )
            time.sleep(pause)

    def status_json(self) -> dict[str, dict[str, Any]]:
        """Return ``tc status -o json`` as a mapping from job name to job."""
        run = self.tc("status", "-o", "json")
        assert run.stdout, run.describe()
        jobs: list[dict[str, Any]] = json.loads(run.stdout)
        return {job["job"]: job for job in jobs}

    # The simulator

    def requests(
        self,
        service: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return the logged API requests; ``path`` is a regular expression."""
        return [
            entry
            for entry in self.sim.requests()
            if (service is None or entry["service"] == service)
            and (method is None or entry["method"] == method)
            and (path is None or re.search(path, entry["path"]))
        ]

    def count(
        self,
        service: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> int:
        """Return how many logged API requests match, as ``requests`` does."""
        return len(self.requests(service, method, path))

    def keboola_jobs_per_job(self) -> Counter[str]:
        """Return how many Keboola jobs each TeckoChecker job created."""
        return Counter(
            variables_of(record).get(JOB_NAME_VARIABLE, "")
            for record in self.sim.keboola_jobs()
        )

    # The state database and status files

    def query(self, sql: str, *params: object) -> list[dict[str, Any]]:
        """Run a query on the state database and return its rows."""
        if not self.database.exists():
            raise FileNotFoundError(self.database)
        with closing(sqlite3.connect(self.database, timeout=30)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql, params)]

    def triggers(self) -> dict[str, dict[str, Any]]:
        """Return the current trigger of every job that has one, by job name."""
        rows = self.query(
            "SELECT jobs.name AS job_name, triggers.* FROM jobs "
            "JOIN triggers ON triggers.id = jobs.trigger_id"
        )
        return {row["job_name"]: row for row in rows}

    def status_files(self) -> dict[str, dict[str, Any]]:
        """Parse every status file of the job directory, by job name."""
        documents = {}
        for path in sorted(self.job_dir.glob("*.status.yaml")):
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
            documents[path.name.removesuffix(".status.yaml")] = document
        return documents


def variables_of(record: Mapping[str, Any]) -> dict[str, str]:
    """Return the ``variableValuesData`` of a created Keboola job as a mapping."""
    data = record["body"].get("variableValuesData") or {}
    return {item["name"]: item["value"] for item in data.get("values", [])}


# Linux capability numbers (linux/capability.h) that let root ignore file
# permissions, and the prctl option that drops one from the bounding set.
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
_CAP_FOWNER = 3
_PR_CAPBSET_DROP = 24


def obey_file_permissions() -> None:
    """Make a child process started as root obey file permissions.

    Meant as ``preexec_fn``. Root ignores permission bits through the
    capabilities above; dropping them from the bounding set removes them from
    the program that is executed next. For other users it does nothing.
    """
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_CAPBSET_DROP, {capability}) failed")


def limit_file_size(max_bytes: int) -> Callable[[], None]:
    """Return a ``preexec_fn`` that caps the size of every file the child writes.

    A write past the cap fails with EFBIG, as on a full disk, instead of
    raising SIGXFSZ, which would kill the process.
    """

    def apply_limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply_limit


def assert_no_traceback(run: Run) -> None:
    """Fail when `tc` printed a Python traceback."""
    assert "Traceback (most recent call last)" not in run.stderr, run.describe()


def assert_clean_exit(run: Run) -> None:
    """Fail unless `tc` exited 0 or 1 without a traceback."""
    assert run.returncode in (0, 1), run.describe()
    assert_no_traceback(run)
