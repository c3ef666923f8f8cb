"""End-to-end tests of `tc watch`: the daemon as a subprocess against the simulator.

Each test starts the simulator in-process on 127.0.0.1 and `tc watch` with
``python -m reconciler`` from this source tree, in a temporary directory with
its own state database. The git tests add a bare remote, the daemon's clone
and a person's clone. Every test ends by checking that no trigger reached
Keboola twice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from reconciler.simulator import Simulator

REPO = Path(__file__).resolve().parent.parent
OPENAI_KEY = "sk-daemon-e2e-5b1c7d"
KEBOOLA_TOKEN = "daemon-e2e-token-90af"
COMPONENT = "kds-team.app-custom-python"
CONFIGURATION = "12345"
VARIABLES = [
    "batch_ids_completed",
    "batch_ids_failed",
    "batch_count_total",
    "batch_count_completed",
    "batch_count_failed",
]

StartSimulator = Callable[..., Simulator]
T = TypeVar("T")


def done(status: str = "completed") -> dict[str, Any]:
    return {"script": [{"status": status}]}


def running() -> dict[str, Any]:
    return {
        "script": [{"status": "in_progress", "seconds": 3600}, {"status": "completed"}]
    }


def scenario(
    batches: dict[str, dict[str, Any]],
    *,
    faults: list[dict[str, Any]] | None = None,
    job_seconds: float = 0.5,
) -> dict[str, Any]:
    return {
        "openai": {"api_keys": [OPENAI_KEY], "batches": batches},
        "keboola": {
            "tokens": [KEBOOLA_TOKEN],
            "job_seconds": job_seconds,
            "configurations": [
                {"component": COMPONENT, "id": CONFIGURATION, "variables": VARIABLES}
            ],
        },
        "faults": faults or [],
    }


def job_text(url: str, batch_ids: list[str]) -> str:
    document = {
        "batch_ids": batch_ids,
        "openai": {"api_key": "env:E2E_OPENAI_KEY", "base_url": f"{url}/v1"},
        "keboola": {
            "stack_url": url,
            "queue_url": url,
            "token": "env:E2E_KEBOOLA_TOKEN",
            "component_id": COMPONENT,
            "configuration_id": CONFIGURATION,
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


def wait_for(check: Callable[[], T], what: str, timeout: float = 15.0) -> T:
    """Return the first true value of ``check``; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def keboola_jobs(sim: Simulator) -> list[dict[str, Any]]:
    response = httpx.get(f"{sim.url}/_sim/keboola/jobs", trust_env=False)
    response.raise_for_status()
    jobs: list[dict[str, Any]] = response.json()
    return jobs


def variables(record: dict[str, Any]) -> dict[str, str]:
    data = record["body"].get("variableValuesData") or {}
    return {item["name"]: item["value"] for item in data.get("values", [])}


def assert_each_trigger_once(sim: Simulator) -> None:
    """No trigger id and no job's batch set reached Keboola twice."""
    sent = [variables(record) for record in keboola_jobs(sim)]
    by_trigger = Counter(values["teckochecker_trigger_id"] for values in sent)
    by_set = Counter(
        (values["teckochecker_job"], values["batch_ids_completed"]) for values in sent
    )
    assert [t for t, n in by_trigger.items() if n > 1] == []
    assert [s for s, n in by_set.items() if n > 1] == []


class Daemon:
    """A `tc watch` subprocess and its log file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.log_path = cwd / f"daemon-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "watch", *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self._base: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        wait_for(lambda: text in self.log(), f"{text!r} in the daemon log", timeout)

    @property
    def base_url(self) -> str:
        if self._base is None:
            pattern = re.compile(r"on (http://127\.0\.0\.1:\d+)")
            match = wait_for(lambda: pattern.search(self.log()), "the HTTP address")
            self._base = match.group(1)
        return self._base

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base_url + path, trust_env=False, timeout=5)

    def cycles(self) -> float:
        """Return the number of cycles run, from /metrics."""
        text = self.get("/metrics").text
        counts = re.findall(r"^tc_cycles_total\{[^}]*\} (\S+)$", text, re.M)
        return sum(float(value) for value in counts)

    def wait_cycles(self, at_least: float) -> float:
        return wait_for(
            lambda: self.cycles() >= at_least and self.cycles(),
            f"{at_least:g} cycles",
        )

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    space = Workspace(tmp_path)
    yield space
    for daemon in space.daemons:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()
        # Shown by pytest only when the test failed.
        print(f"--- log of tc watch (PID {daemon.pid}) ---\n{daemon.log()}")


class Workspace:
    """A temporary directory with a job directory, a state directory and env."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.job_dir = root / "jobs.d"
        self.job_dir.mkdir()
        self.state_dir = root / "state"
        self.daemons: list[Daemon] = []
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("TC_", "GIT_")) and "proxy" not in name.lower()
        }
        self.env.update(
            {
                "PYTHONPATH": str(REPO),
                "NO_COLOR": "1",
                "TC_STATE_DIR": str(self.state_dir),
                "TC_ALLOWED_HOSTS": "127.0.0.1",
                "TC_KEBOOLA_POLL_SECONDS": "1",
                "TC_TRIGGER_LOOKUP_GRACE": "1",
                "TC_HTTP_TIMEOUT": "10",
                "TC_RETRY_MAX_WAIT": "1",
                "E2E_OPENAI_KEY": OPENAI_KEY,
                "E2E_KEBOOLA_TOKEN": KEBOOLA_TOKEN,
            }
        )

    def start(self, *args: str, job_dir: Path | None = None) -> Daemon:
        directory = str(job_dir or self.job_dir)
        daemon = Daemon([directory, *args], self.root, self.env)
        self.daemons.append(daemon)
        return daemon

    def tc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def status(self, name: str, job_dir: Path | None = None) -> dict[str, Any] | None:
        return read_yaml((job_dir or self.job_dir) / f"{name}.status.yaml")

    def wait_status(
        self,
        name: str,
        check: Callable[[dict[str, Any]], bool],
        what: str,
        job_dir: Path | None = None,
    ) -> dict[str, Any]:
        def current() -> dict[str, Any] | None:
            document = self.status(name, job_dir)
            return document if document is not None and check(document) else None

        return wait_for(current, f"status file of {name}: {what}")

    def integrity(self) -> str:
        connection = sqlite3.connect(self.state_dir / "state.db")
        try:
            return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            connection.close()


def keboola_finished(document: dict[str, Any]) -> bool:
    trigger = document.get("trigger") or {}
    return trigger.get("keboola_status") == "success"


def test_watch_follows_job_files(
    workspace: Workspace, simulator: StartSimulator
) -> None:
    """Job-file changes start cycles quickly, once per burst, and nothing else does."""
    sim = simulator(
        scenario({"batch_done": done(), "batch_more": done(), "batch_wait": running()})
    )
    daemon = workspace.start("--http", "127.0.0.1:0")
    daemon.wait_log("tc watch 0.1.0 started")
    daemon.wait_cycles(1)

    # A new job file starts a cycle within about two seconds.
    started = time.monotonic()
    (workspace.job_dir / "alpha.yaml").write_text(job_text(sim.url, ["batch_done"]))
    workspace.wait_status("alpha", lambda d: d["status"] == "completed", "completed")
    assert time.monotonic() - started < 3.0
    workspace.wait_status("alpha", keboola_finished, "Keboola job finished")

    # Editor temporaries, hidden files and status files start nothing.
    settled = daemon.cycles()
    for name in (".alpha.yaml.swp", "alpha.yaml~", ".#alpha.yaml", "x.status.yaml"):
        (workspace.job_dir / name).write_text("batch_ids: [\n")
    time.sleep(1.5)
    assert daemon.cycles() == settled

    # A burst of ten new files, as from a checkout, is one or two cycles.
    for index in range(10):
        path = workspace.job_dir / f"burst-{index}.yaml"
        path.write_text(job_text(sim.url, ["batch_wait"]))
    for index in range(10):
        workspace.wait_status(f"burst-{index}", lambda d: True, "written")
    after_burst = daemon.cycles()
    assert 1 <= after_burst - settled <= 2
    time.sleep(1.5)
    assert daemon.cycles() == after_burst

    # A broken file keeps its last valid spec and shows the error; a fix clears it.
    good = (workspace.job_dir / "alpha.yaml").read_text()
    (workspace.job_dir / "alpha.yaml").write_text(good + "unknown_key: 1\n")
    broken = workspace.wait_status(
        "alpha", lambda d: d["status"] == "invalid", "invalid"
    )
    assert "unknown_key" in broken["error"]["message"]
    assert broken["trigger"]["state"] == "accepted"
    (workspace.job_dir / "alpha.yaml").write_text(good)
    fixed = workspace.wait_status(
        "alpha", lambda d: d["status"] == "completed", "fixed"
    )
    assert fixed["error"] is None

    # SIGHUP reads the directory again.
    before_hup = daemon.cycles()
    daemon.send(signal.SIGHUP)
    daemon.wait_cycles(before_hup + 1)
    daemon.wait_log("SIGHUP received")

    assert daemon.stop() == 0
    assert len(keboola_jobs(sim)) == 1
    assert_each_trigger_once(sim)


def test_watch_beside_other_commands(
    workspace: Workspace, simulator: StartSimulator
) -> None:
    """tc status, tc apply and a refused second daemon run beside the daemon."""
    sim = simulator(scenario({"batch_done": done(), "batch_wait": running()}))
    (workspace.job_dir / "alpha.yaml").write_text(job_text(sim.url, ["batch_done"]))
    for index in range(10):
        path = workspace.job_dir / f"burst-{index}.yaml"
        path.write_text(job_text(sim.url, ["batch_wait"]))
    daemon = workspace.start("--http", "127.0.0.1:0")
    workspace.wait_status("alpha", keboola_finished, "Keboola job finished")
    workspace.wait_status("burst-9", lambda d: d["status"] == "active", "active")

    # tc status and tc apply work beside the daemon and trigger nothing more.
    status = workspace.tc("status")
    assert status.returncode == 0, status.stderr
    assert "alpha" in status.stdout
    assert "burst-9" in status.stdout
    apply = workspace.tc("apply", str(workspace.job_dir))
    assert apply.returncode == 0, apply.stderr

    # A second daemon on the same state directory is refused at once.
    second = workspace.start()
    assert second.process.wait(timeout=15) == 1
    assert f"another tc watch (PID {daemon.pid}) is running" in second.log()

    health = daemon.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    metrics = daemon.get("/metrics").text
    assert 'tc_jobs{status="completed"} 1.0' in metrics
    assert 'tc_jobs{status="active"} 10.0' in metrics
    assert 'tc_batches{status="in_progress"} 10.0' in metrics
    assert 'tc_triggers{state="accepted"} 1.0' in metrics
    assert 'tc_http_requests_total{api="keboola",method="POST",outcome="201"} 1.0' in (
        metrics
    )
    assert "tc_cycle_duration_seconds_count" in metrics

    assert daemon.stop() == 0
    assert "tc watch stopped" in daemon.log()
    assert len(keboola_jobs(sim)) == 1
    assert_each_trigger_once(sim)
    assert OPENAI_KEY not in daemon.log()
    assert KEBOOLA_TOKEN not in daemon.log()


def test_sigterm_mid_poll_exits_cleanly(
    workspace: Workspace, simulator: StartSimulator
) -> None:
    """SIGTERM during a hanging poll cancels it after the grace and exits 0."""
    sim = simulator(
        scenario(
            {"batch_done": done()},
            faults=[{"service": "openai", "latency": 10, "times": 1}],
        )
    )
    (workspace.job_dir / "alpha.yaml").write_text(job_text(sim.url, ["batch_done"]))
    daemon = workspace.start(
        "--grace", "1", "--http", "127.0.0.1:0", "--stuck-after", "1"
    )
    daemon.wait_log("Polling 1 batch")

    # The poll hangs, so the cycle outlives --stuck-after and /healthz reports it.
    stuck = wait_for(
        lambda: daemon.get("/healthz").status_code == 503 and daemon.get("/healthz"),
        "/healthz to return 503",
    )
    assert stuck.json()["step"] == "cycle"

    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert daemon.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    log = daemon.log()
    assert "SIGTERM received: stopping once tc-cycle-1 ends (at most 1 s)" in log
    assert "tc-cycle-1 did not end within the 1 s grace period; cancelling it" in log
    assert "tc watch stopped" in log
    assert workspace.integrity() == "ok"
    assert keboola_jobs(sim) == []

    # The next daemon goes on from the database and triggers once.
    again = workspace.start()
    workspace.wait_status("alpha", lambda d: d["status"] == "completed", "completed")
    assert again.stop() == 0
    assert len(keboola_jobs(sim)) == 1
    assert_each_trigger_once(sim)


def test_sigterm_mid_send_keeps_claim(
    workspace: Workspace, simulator: StartSimulator
) -> None:
    """SIGTERM during a trigger's send keeps the claim that stops a resend."""
    fault = {
        "service": "keboola",
        "method": "POST",
        "path": "^/jobs$",
        "after_commit": {"latency": 10},
        "times": 1,
    }
    sim = simulator(scenario({"batch_done": done()}, faults=[fault]))
    (workspace.job_dir / "alpha.yaml").write_text(job_text(sim.url, ["batch_done"]))
    daemon = workspace.start("--grace", "0.5")
    daemon.wait_log("Sending trigger")
    wait_for(lambda: keboola_jobs(sim), "Keboola to create the job")

    daemon.send(signal.SIGTERM)

    assert daemon.process.wait(timeout=10) == 0
    assert workspace.integrity() == "ok"
    connection = sqlite3.connect(workspace.state_dir / "state.db")
    try:
        state, lease = connection.execute(
            "SELECT state, lease_until FROM triggers WHERE job = 'alpha'"
        ).fetchone()
    finally:
        connection.close()
    assert state == "sending"
    assert lease is not None
    # While the lease holds, another process sends nothing.
    apply = workspace.tc("apply", str(workspace.job_dir))
    assert "being sent by another process" in apply.stdout
    assert len(keboola_jobs(sim)) == 1
    assert_each_trigger_once(sim)


def test_symlink_swap_is_followed(
    workspace: Workspace, simulator: StartSimulator
) -> None:
    """A checkout swapped by symbolic link, as git-sync does, is watched anew."""
    sim = simulator(scenario({"batch_done": done(), "batch_wait": running()}))
    for version, names in (("v1", ["alpha"]), ("v2", ["alpha", "beta"])):
        directory = workspace.root / version / "jobs.d"
        directory.mkdir(parents=True)
        for name in names:
            batch = "batch_done" if name == "alpha" else "batch_wait"
            (directory / f"{name}.yaml").write_text(job_text(sim.url, [batch]))
    link = workspace.root / "current"
    link.symlink_to("v1")
    daemon = workspace.start("--log-format", "json", job_dir=link / "jobs.d")
    workspace.wait_status("alpha", keboola_finished, "finished", link / "jobs.d")

    # git-sync swaps a link to each new worktree, atomically by rename.
    (workspace.root / "next").symlink_to("v2")
    os.replace(workspace.root / "next", link)
    # git-sync then removes the old worktree.
    shutil.rmtree(workspace.root / "v1")

    workspace.wait_status(
        "beta", lambda d: d["status"] == "active", "active", link / "jobs.d"
    )
    assert (workspace.root / "v2" / "jobs.d" / "beta.status.yaml").exists()
    assert daemon.stop() == 0
    records = [json.loads(line) for line in daemon.log().splitlines()]
    messages = [record["message"] for record in records]
    assert any(m.startswith("tc watch 0.1.0 started") for m in messages)
    assert "Job beta created at revision" in " ".join(messages)
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert [r for r in records if r["level"] in ("warning", "error")] == []
    assert len(keboola_jobs(sim)) == 1
    assert_each_trigger_once(sim)


# GitOps


def git(directory: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(directory), *args], capture_output=True, text=True, check=True
    )
    return result.stdout


def make_remote(root: Path) -> tuple[Path, Path, Path]:
    """Return a bare remote, the daemon's clone and a person's clone."""
    remote = root / "remote.git"
    git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    clones = []
    for who in ("person", "deploy"):
        target = root / who
        git(root, "clone", "--quiet", str(remote), str(target))
        git(target, "config", "user.name", who)
        git(target, "config", "user.email", f"{who}@example.com")
        git(target, "checkout", "--quiet", "-B", "main")
        clones.append(target)
        if who == "person":
            (target / "jobs.d").mkdir()
            (target / "jobs.d" / "README.md").write_text("Job files.\n")
            git(target, "add", ".")
            git(target, "commit", "--quiet", "-m", "Start")
            git(target, "push", "--quiet", "-u", "origin", "main")
    git(clones[1], "pull", "--quiet", "origin", "main")
    git(clones[1], "branch", "--quiet", "--set-upstream-to=origin/main")
    return remote, clones[0], clones[1]


def publish(person: Path, message: str, files: dict[str, str | None]) -> None:
    """Commit files (None deletes one) in the person's clone and push them."""
    git(person, "pull", "--quiet", "--rebase")
    for name, text in files.items():
        path = person / name
        if text is None:
            git(person, "rm", "--quiet", name)
        else:
            path.write_text(text)
            git(person, "add", name)
    git(person, "commit", "--quiet", "-m", message)
    git(person, "push", "--quiet")


def remote_status(remote: Path, name: str) -> dict[str, Any] | None:
    result = subprocess.run(
        ["git", "-C", str(remote), "show", f"main:jobs.d/{name}.status.yaml"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return None
    loaded = yaml.safe_load(result.stdout)
    return loaded if isinstance(loaded, dict) else None


def wait_remote(
    remote: Path, name: str, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        document = remote_status(remote, name)
        return document if document is not None and check(document) else None

    return wait_for(current, f"pushed status of {name}: {what}", timeout=20)


def daemon_commits(remote: Path) -> list[str]:
    output = git(
        remote, "log", "--author=TeckoChecker", "--name-only", "--format=>%s", "main"
    )
    return [line for line in output.splitlines() if line]


def test_gitops_pull_commit_push(
    workspace: Workspace, simulator: StartSimulator
) -> None:
    """Job files come by git pull; status files go back by commit and push."""
    sim = simulator(
        scenario({"batch_done": done(), "batch_more": done(), "batch_wait": running()})
    )
    remote, person, deploy = make_remote(workspace.root)
    daemon = workspace.start(
        "--git-pull", "1", "--commit-status", "--push", job_dir=deploy / "jobs.d"
    )
    daemon.wait_log("tc watch 0.1.0 started")

    publish(
        person,
        "Add alpha and beta",
        {
            "jobs.d/alpha.yaml": job_text(sim.url, ["batch_wait"]),
            "jobs.d/beta.yaml": job_text(sim.url, ["batch_wait"]),
        },
    )
    wait_remote(remote, "alpha", lambda d: d["status"] == "active", "active")
    wait_remote(remote, "beta", lambda d: d["status"] == "active", "active")

    edited = job_text(sim.url, ["batch_done", "batch_more"])
    publish(person, "Alpha: finished batches", {"jobs.d/alpha.yaml": edited})
    wait_remote(remote, "alpha", keboola_finished, "completed and finished")

    publish(person, "Break alpha", {"jobs.d/alpha.yaml": edited + "unknown_key: 1\n"})
    broken = wait_remote(remote, "alpha", lambda d: d["status"] == "invalid", "invalid")
    assert "unknown_key" in broken["error"]["message"]

    publish(person, "Fix alpha", {"jobs.d/alpha.yaml": edited})
    fixed = wait_remote(remote, "alpha", lambda d: d["status"] == "completed", "fixed")
    assert fixed["error"] is None

    publish(person, "Remove alpha", {"jobs.d/alpha.yaml": None})
    wait_for(
        lambda: (
            remote_status(remote, "alpha") is None
            and "(removed)" in git(remote, "log", "-1", "--format=%s", "main")
        ),
        "the status file's removal to be pushed",
        timeout=20,
    )

    # Its own commits start no cycle and no further commit.
    commits = daemon_commits(remote)
    time.sleep(2)
    assert daemon_commits(remote) == commits
    assert daemon.stop() == 0

    subjects = [line for line in commits if line.startswith(">")]
    files = [line for line in commits if not line.startswith(">")]
    assert subjects[-1] == ">tc: status of alpha (active), beta (active) [skip ci]"
    assert subjects[0] == ">tc: status of alpha (removed) [skip ci]"
    assert all(s.startswith(">tc: status of alpha (") for s in subjects[:-1])
    assert all(s.endswith("[skip ci]") for s in subjects)
    assert set(files) == {"jobs.d/alpha.status.yaml", "jobs.d/beta.status.yaml"}
    assert git(deploy, "status", "--porcelain") == ""
    assert len(keboola_jobs(sim)) == 1
    assert_each_trigger_once(sim)


def test_gitops_push_after_concurrent_push(
    workspace: Workspace, simulator: StartSimulator
) -> None:
    """A push rejected after another person's push is rebased and retried."""
    sim = simulator(scenario({"batch_done": done()}, job_seconds=3))
    remote, person, deploy = make_remote(workspace.root)
    daemon = workspace.start(
        "--git-pull", "3600", "--commit-status", "--push", job_dir=deploy / "jobs.d"
    )
    daemon.wait_log("tc watch 0.1.0 started")
    publish(
        person, "Add alpha", {"jobs.d/alpha.yaml": job_text(sim.url, ["batch_done"])}
    )

    # SIGHUP pulls at once; the trigger's status is pushed while Keboola runs.
    daemon.send(signal.SIGHUP)
    wait_remote(remote, "alpha", lambda d: d["status"] == "completed", "completed")
    publish(person, "Add notes", {"notes.md": "Notes.\n"})

    # Keboola finishes, the daemon commits, its push is rejected, it rebases.
    wait_remote(remote, "alpha", keboola_finished, "Keboola job finished")
    daemon.wait_log("Pushed status commits (1 rebase(s) on the remote)")
    log = git(remote, "log", "--format=%s", "main").splitlines()
    assert log[0].startswith("tc: status of alpha (completed)")
    assert "Add notes" in log
    assert daemon.stop() == 0
    assert len(keboola_jobs(sim)) == 1
    assert_each_trigger_once(sim)


def test_sigterm_mid_git_pull_bounded(
    workspace: Workspace, simulator: StartSimulator
) -> None:
    """A hanging git pull is stopped after the grace period; the exit is 0."""
    simulator(scenario({}))
    _, _, deploy = make_remote(workspace.root)
    # A remote whose transport is a local command that never responds.
    git(deploy, "config", "protocol.ext.allow", "always")
    git(deploy, "remote", "set-url", "origin", "ext::sleep 60")
    daemon = workspace.start(
        "--git-pull", "5", "--grace", "1", job_dir=deploy / "jobs.d"
    )
    daemon.wait_log("git: repository")
    time.sleep(0.5)

    started = time.monotonic()
    daemon.send(signal.SIGTERM)

    assert daemon.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 6
    log = daemon.log()
    assert "SIGTERM received: stopping once tc-git-pull ends (at most 1 s)" in log
    assert "tc-git-pull did not end within the 1 s grace period" in log
    assert not (deploy / ".git" / "index.lock").exists()
