"""Measure the CPU share of `tc watch` with jobs that wait between polls.

The script starts the simulator on 127.0.0.1, writes N job files whose
batches stay ``in_progress`` and starts ``tc watch`` on them. Once every job
has its status file, it reads the daemon's user and system CPU time from
``/proc/PID/stat`` before and after the measuring window. It prints the
difference as a share of one core, with the cycles the daemon ran in the
window. The polls that fall into the window are part of the measurement.
Linux only.

Usage:
    python benchmarks/idle_daemon.py                       # 100 jobs, 60 s, 30 s polls
    python benchmarks/idle_daemon.py --poll-interval 3600  # no poll in the window
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

from reconciler.simulator import Simulator

REPO = Path(__file__).resolve().parent.parent
OPENAI_KEY = "sk-bench-idle"
KEBOOLA_TOKEN = "bench-idle-token"
COMPONENT = "kds-team.app-custom-python"
CONFIGURATION = "12345"


def cpu_seconds(pid: int) -> float:
    """Return utime + stime of a process in seconds, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces; the fields after it are fixed.
    fields = text.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def job_text(url: str, batch_id: str, poll_interval: int) -> str:
    document = {
        "batch_ids": [batch_id],
        "openai": {"api_key": "env:BENCH_OPENAI_KEY", "base_url": f"{url}/v1"},
        "keboola": {
            "stack_url": url,
            "queue_url": url,
            "token": "env:BENCH_KEBOOLA_TOKEN",
            "component_id": COMPONENT,
            "configuration_id": CONFIGURATION,
        },
        "poll_interval_seconds": poll_interval,
    }
    return yaml.safe_dump(document, sort_keys=False)


def cycles(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", trust_env=False, timeout=5).text
    counts = re.findall(r"^tc_cycles_total\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(value) for value in counts)


def wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def measure(jobs: int, seconds: float, poll_interval: int) -> None:
    batches = {
        f"batch_idle_{i:03d}": {
            "script": [
                {"status": "in_progress", "seconds": 10**9},
                {"status": "completed"},
            ]
        }
        for i in range(jobs)
    }
    scenario = {
        "openai": {"api_keys": [OPENAI_KEY], "batches": batches},
        "keboola": {
            "tokens": [KEBOOLA_TOKEN],
            "configurations": [{"component": COMPONENT, "id": CONFIGURATION}],
        },
    }
    with Simulator(scenario) as simulator, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        job_dir = root / "jobs.d"
        job_dir.mkdir()
        for index, batch_id in enumerate(batches):
            path = job_dir / f"idle-{index:03d}.yaml"
            path.write_text(job_text(simulator.url, batch_id, poll_interval))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TC_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "TC_STATE_DIR": str(root / "state"),
                "TC_ALLOWED_HOSTS": "127.0.0.1",
                "BENCH_OPENAI_KEY": OPENAI_KEY,
                "BENCH_KEBOOLA_TOKEN": KEBOOLA_TOKEN,
            }
        )
        log_path = root / "daemon.log"
        with log_path.open("wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "watch", str(job_dir)]
                + ["--http", "127.0.0.1:0", "--log-level", "info"],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            wait_for(
                lambda: len(list(job_dir.glob("*.status.yaml"))) == jobs,
                "the first cycle",
                120,
            )
            match = re.search(r"on (http://127\.0\.0\.1:\d+)", log_path.read_text())
            assert match is not None, log_path.read_text()
            base_url = match.group(1)
            time.sleep(2)

            cpu_before, wall_before = cpu_seconds(daemon.pid), time.monotonic()
            cycles_before = cycles(base_url)
            time.sleep(seconds)
            cpu_after, wall_after = cpu_seconds(daemon.pid), time.monotonic()
            cycles_after = cycles(base_url)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)

    share = (cpu_after - cpu_before) / (wall_after - wall_before) * 100
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"machine: {os.cpu_count()} CPUs ({platform.machine()}), "
        f"Python {platform.python_version()}, {platform.system()}"
    )
    print(f"jobs: {jobs}, poll interval: {poll_interval} s, window: {seconds:g} s")
    print(f"cycles in the window: {cycles_after - cycles_before:g}")
    print(f"daemon CPU: {cpu_after - cpu_before:.3f} s = {share:.2f} % of one core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="number of job files")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="measuring window in seconds"
    )
    parser.add_argument(
        "--poll-interval",
        type=int,
        default=30,
        help="poll_interval_seconds of every job (30 to 3600)",
    )
    args = parser.parse_args()
    measure(args.jobs, args.seconds, args.poll_interval)


if __name__ == "__main__":
    main()
