"""Crash loop: `tc apply` killed with SIGKILL at many points, then restarted.

Each lane is a workspace of its own (simulator, job directory, state
directory) with 50 jobs whose batches are all completed, so one cycle
triggers all 50. The first `tc apply` of a lane is killed by a failpoint
(``TC_FAILPOINT=NAME:N``, see ``reconciler.failpoints``) at a different point
of the trigger protocol, the batch polling or the status-file writes. The
lane is then restarted at once, which must leave every claim whose lease is
still running alone, and again after the leases ran out, until every job has
settled. Every third lane is killed a second time, as the restart writes its
status files.

A lease lasts ``http_timeout + 30 s``, so the lanes run side by side. Each
lane has a thread that waits for its own leases. A semaphore lets only
``WORKERS`` `tc` processes run at once, so that even a loaded machine
restarts every lane well within its leases.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    HTTP_TIMEOUT,
    JOB_NAME_VARIABLE,
    LEASE_MARGIN_SECONDS,
    STATUS_FILE_KEYS,
    Run,
    Workspace,
    scenario,
    terminal,
    variables_of,
)

from reconciler.simulator import Simulator

pytestmark = pytest.mark.slow

JOBS = 50
WORKERS = 4
MAX_RECOVERY_RUNS = 8

# Where the first run of each lane is killed, as (failpoint, N): the Nth time
# the process reaches the point. With 50 jobs in one cycle, the trigger points
# and the status writes are reached once per job, so every N up to 50 occurs.
# The polling point is reached once per cycle.
KILLS = [
    *(("trigger.claimed", n) for n in (1, 2, 10, 25, 37, 49, 50)),
    *(("trigger.sending", n) for n in (1, 3, 8, 17, 33, 45, 50)),
    *(("trigger.received", n) for n in (1, 5, 13, 20, 40, 50)),
    *(("trigger.recorded", n) for n in (1, 12, 30, 49, 50)),
    *(("status.renaming", n) for n in (1, 7, 26, 38, 50)),
    ("poll.recorded", 1),
]
# A second kill in the restart of every third lane. The restart always writes
# at least two status files, and a kill there leaves no lease to wait for.
SECOND_KILL = "status.renaming:2"


@dataclass
class Lane:
    """One workspace and the runs of `tc` in it."""

    failpoint: str
    workspace: Workspace
    runs: list[Run] = field(default_factory=list)
    claimed_before_restart: set[str] = field(default_factory=set)
    posts_before_restart: int = 0
    posts_after_restart: int = 0
    created_by_restart: list[str] = field(default_factory=list)
    second_kill: str | None = None

    @property
    def name(self) -> str:
        return self.failpoint


def _job_names() -> list[str]:
    return [f"job-{index:03d}" for index in range(JOBS)]


def _start_lane(root: Path, failpoint: str, index: int) -> Lane:
    batches = {f"batch_{i:03d}": terminal() for i in range(JOBS)}
    # Keboola runs the jobs of one configuration one after the other, so 50
    # jobs of 0.02 s each finish within a second.
    simulator = Simulator(scenario(batches, job_seconds=0.02))
    simulator.start()
    directory = root / f"lane-{index:02d}-{failpoint.replace(':', '-')}"
    workspace = Workspace(directory, simulator)
    for i, name in enumerate(_job_names()):
        workspace.write_job(name, [f"batch_{i:03d}"])
    second = SECOND_KILL if index % 3 == 0 else None
    return Lane(failpoint, workspace, second_kill=second)


def _settled(lane: Lane) -> bool:
    triggers = lane.workspace.triggers()
    if len(triggers) < JOBS:
        return False
    return all(
        t["state"] == "accepted" and t["keboola_finished"] for t in triggers.values()
    )


def _latest_lease(lane: Lane) -> float:
    """Return the Unix time when the lane's last lease runs out, or 0."""
    latest = 0.0
    for trigger in lane.workspace.triggers().values():
        if trigger["state"] == "sending" and trigger["lease_until"]:
            until = datetime.fromisoformat(trigger["lease_until"]).timestamp()
            latest = max(latest, until)
    return latest


def _crash_and_recover(lane: Lane, slots: threading.Semaphore) -> None:
    """Kill the first run, restart at once, then recover after the leases."""
    with slots:
        lane.runs.append(lane.workspace.apply(failpoint=lane.failpoint))
        lane.claimed_before_restart = set(lane.workspace.triggers())
        lane.posts_before_restart = lane.workspace.count("keboola", "POST", "^/jobs$")
        known = {record["id"] for record in lane.workspace.sim.keboola_jobs()}
        lane.runs.append(lane.workspace.apply(failpoint=lane.second_kill))
        lane.posts_after_restart = lane.workspace.count("keboola", "POST", "^/jobs$")
        lane.created_by_restart = [
            variables_of(record)[JOB_NAME_VARIABLE]
            for record in lane.workspace.sim.keboola_jobs()
            if record["id"] not in known
        ]
    wait = _latest_lease(lane) - time.time() + 0.5
    if wait > 0:
        time.sleep(wait)
    for _ in range(MAX_RECOVERY_RUNS):
        with slots:
            lane.runs.append(lane.workspace.apply())
        # Each run writes its status files at the end, so a settled lane's
        # status files already show the final state.
        if _settled(lane):
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Lane]]:
    """Kill every lane once, restart it at once, then again until it settles."""
    root = tmp_path_factory.mktemp("crash-loop")
    started: list[Lane] = []
    try:
        for index, (point, count) in enumerate(KILLS):
            started.append(_start_lane(root, f"{point}:{count}", index))
        slots = threading.Semaphore(WORKERS)
        with ThreadPoolExecutor(max_workers=len(started)) as pool:
            futures = [pool.submit(_crash_and_recover, lane, slots) for lane in started]
            for future in futures:
                future.result()
        yield started
    finally:
        for lane in started:
            lane.workspace.sim.stop()


def test_crash_loop_covers_thirty_points(lanes: list[Lane]) -> None:
    points = {lane.failpoint.split(":")[0] for lane in lanes}

    assert len({lane.failpoint for lane in lanes}) >= 30
    assert points >= {
        "trigger.claimed",
        "trigger.sending",
        "trigger.received",
        "trigger.recorded",
        "status.renaming",
    }


@pytest.mark.parametrize("index", range(len(KILLS)), ids=[f"{p}:{n}" for p, n in KILLS])
def test_crash_loop_kill_hit(lanes: list[Lane], index: int) -> None:
    lane = lanes[index]

    assert lane.runs[0].killed, lane.runs[0].describe()


def test_crash_loop_second_kills_hit(lanes: list[Lane]) -> None:
    second = [lane for lane in lanes if lane.second_kill]

    assert len(second) >= 10
    for lane in second:
        assert lane.runs[1].killed, lane.runs[1].describe()


def test_crash_loop_lease_respected(lanes: list[Lane]) -> None:
    """The restart within the lease sends only the triggers never claimed."""
    for lane in lanes:
        # Both runs together took less than a lease, so every claim of the
        # killed run was still leased while the restart ran.
        both = lane.runs[0].seconds + lane.runs[1].seconds
        assert both < HTTP_TIMEOUT + LEASE_MARGIN_SECONDS, lane.name
        unclaimed = JOBS - len(lane.claimed_before_restart)
        sent = lane.posts_after_restart - lane.posts_before_restart
        leased = set(lane.created_by_restart) & lane.claimed_before_restart

        assert leased == set(), lane.name
        # A request that times out on a loaded machine may leave its claim to
        # a later run, so the restart sends at most the unclaimed triggers.
        assert sent <= unclaimed, lane.name


def test_crash_loop_every_job_settles(lanes: list[Lane]) -> None:
    for lane in lanes:
        assert _settled(lane), lane.runs[-1].describe()


def test_crash_loop_triggers_once(lanes: list[Lane]) -> None:
    for lane in lanes:
        per_job = lane.workspace.keboola_jobs_per_job()

        assert set(per_job) == set(_job_names()), lane.name
        duplicates = {name: n for name, n in per_job.items() if n != 1}
        assert duplicates == {}, lane.name


def test_crash_loop_records_keboola_job(lanes: list[Lane]) -> None:
    for lane in lanes:
        created = {record["id"]: record for record in lane.workspace.sim.keboola_jobs()}
        for name, trigger in lane.workspace.triggers().items():
            record = created[trigger["keboola_job_id"]]
            body = record["body"]["variableValuesData"]["values"]
            variables = {item["name"]: item["value"] for item in body}

            assert variables["teckochecker_job"] == name, lane.name
            assert variables["teckochecker_trigger_id"] == trigger["id"], lane.name


def test_crash_loop_no_traceback(lanes: list[Lane]) -> None:
    for lane in lanes:
        for run in lane.runs:
            assert run.killed or run.returncode in (0, 1), run.describe()
            assert "Traceback" not in run.stderr, run.describe()


def test_crash_loop_database_intact(lanes: list[Lane]) -> None:
    for lane in lanes:
        with closing(sqlite3.connect(lane.workspace.database)) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchall()

        assert result == [("ok",)], lane.name


def test_crash_loop_status_files_agree(lanes: list[Lane]) -> None:
    for lane in lanes:
        files = lane.workspace.status_files()
        database = lane.workspace.status_json()

        assert set(files) == set(_job_names()), lane.name
        for name, document in files.items():
            expected: dict[str, Any] = {
                key: database[name][key] for key in STATUS_FILE_KEYS
            }

            assert tuple(document) == STATUS_FILE_KEYS, (lane.name, name)
            assert document == expected, (lane.name, name)
