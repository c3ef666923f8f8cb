"""Keboola Queue API faults on the trigger and on following the Keboola job.

As for OpenAI, every case has its own job and simulator, so the requests a
fault costs are counted on that simulator alone, and a bystander job with a
clean simulator runs in the same `tc apply`.

A status fault on ``POST /jobs`` responds without creating the job, so after
5xx, a bad body or a dropped connection the trigger's outcome is unknown, the
job search comes back empty and the trigger is sent again with the same
trigger id once the grace period has passed. A latency fault answers too late
but does create the job, which the search then finds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    RETRY_ATTEMPTS,
    TRIGGER_ID_VARIABLE,
    Run,
    Workspace,
    assert_clean_exit,
    scenario,
    terminal,
    variables_of,
)

from reconciler.simulator import Simulator

BYSTANDER = "bystander"
# Longer than the latency fault below, so that its job is created before the
# grace period ends and no second trigger is sent.
GRACE_SECONDS = 6
TRIGGER_LATENCY = 3
MAX_CYCLES = 12


@dataclass(frozen=True)
class TriggerCase:
    """One fault on ``POST /jobs`` and the end state it must lead to.

    ``posts`` is the number of ``POST /jobs`` over all cycles, ``jobs`` the
    number of Keboola jobs created. ``state`` is the trigger's final state;
    None means that the trigger was released and waits for ``Retry-After``.
    """

    name: str
    rule: dict[str, Any]
    posts: int
    jobs: int
    state: str | None
    first_error: str

    @property
    def job(self) -> str:
        return f"trigger-{self.name}"


def _once(rule: dict[str, Any]) -> dict[str, Any]:
    return {**rule, "times": 1}


UNKNOWN = "outcome unknown"
TRIGGER_CASES = [
    TriggerCase(
        "429-retry-after-seconds",
        _once({"status": 429, "retry_after": 1}),
        2,
        1,
        "accepted",
        "did not create",
    ),
    TriggerCase(
        "429-retry-after-date",
        _once({"status": 429, "retry_after": "http-date", "retry_after_seconds": 2}),
        2,
        1,
        "accepted",
        "did not create",
    ),
    TriggerCase(
        "429-retry-after-too-long",
        {"status": 429, "retry_after": 120},
        1,
        0,
        None,
        "did not create",
    ),
    TriggerCase("500", _once({"status": 500}), 2, 1, "accepted", UNKNOWN),
    TriggerCase("502", _once({"status": 502}), 2, 1, "accepted", UNKNOWN),
    TriggerCase("503", _once({"status": 503}), 2, 1, "accepted", UNKNOWN),
    TriggerCase(
        "malformed-body", _once({"malformed": True}), 2, 1, "accepted", UNKNOWN
    ),
    TriggerCase("empty-body", _once({"empty": True}), 2, 1, "accepted", UNKNOWN),
    TriggerCase("wrong-shape", _once({"wrong_shape": True}), 2, 1, "accepted", UNKNOWN),
    TriggerCase("dropped-connection", _once({"drop": True}), 2, 1, "accepted", UNKNOWN),
    TriggerCase(
        "no-response",
        _once({"latency": TRIGGER_LATENCY}),
        1,
        1,
        "accepted",
        UNKNOWN,
    ),
    TriggerCase("401", {"status": 401}, 1, 0, "rejected", "401"),
    TriggerCase("403", {"status": 403}, 1, 0, "rejected", "403"),
]


@dataclass
class TriggerOutcome:
    """What the cycles did, shared by the trigger tests of this module."""

    workspace: Workspace
    simulators: dict[str, Simulator]
    runs: list[Run]
    first_status: dict[str, dict[str, Any]]
    final_status: dict[str, dict[str, Any]] = field(default_factory=dict)


def _settled(document: dict[str, Any], case: TriggerCase | None) -> bool:
    trigger = document["trigger"]
    if case is not None and case.state is None:
        return trigger is None
    if case is not None and case.state == "rejected":
        return trigger is not None and trigger["state"] == "rejected"
    return (
        trigger is not None
        and trigger["state"] == "accepted"
        and trigger["keboola_status"] == "success"
    )


def _start(
    scenario_data: dict[str, Any], simulators: dict[str, Simulator], name: str
) -> Simulator:
    simulator = Simulator(scenario_data)
    simulator.start()
    simulators[name] = simulator
    return simulator


@pytest.fixture(scope="module")
def trigger_outcome(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TriggerOutcome]:
    """Run cycles until every trigger fault has played out."""
    root: Path = tmp_path_factory.mktemp("keboola-trigger-faults")
    simulators: dict[str, Simulator] = {}
    try:
        bystander = _start(
            scenario({"batch_bystander": terminal()}), simulators, BYSTANDER
        )
        workspace = Workspace(
            root, bystander, {"TC_TRIGGER_LOOKUP_GRACE": str(GRACE_SECONDS)}
        )
        workspace.write_job(BYSTANDER, ["batch_bystander"])
        for case in TRIGGER_CASES:
            fault = {
                "service": "keboola",
                "method": "POST",
                "path": "^/jobs$",
                **case.rule,
            }
            data = scenario({"batch_a": terminal()}, faults=[fault])
            simulator = _start(data, simulators, case.name)
            workspace.write_job(case.job, ["batch_a"], simulator.url)

        runs = [workspace.apply()]
        first_status = workspace.status_files()
        cases = {case.job: case for case in TRIGGER_CASES}
        for _ in range(MAX_CYCLES):
            documents = workspace.status_files()
            if all(_settled(d, cases.get(name)) for name, d in documents.items()):
                break
            time.sleep(1)
            runs.append(workspace.apply())
        yield TriggerOutcome(
            workspace, simulators, runs, first_status, workspace.status_files()
        )
    finally:
        for simulator in simulators.values():
            simulator.stop()


TRIGGER_IDS = [case.name for case in TRIGGER_CASES]


@pytest.mark.parametrize("case", TRIGGER_CASES, ids=TRIGGER_IDS)
def test_trigger_fault_request_count(
    trigger_outcome: TriggerOutcome, case: TriggerCase
) -> None:
    simulator = trigger_outcome.simulators[case.name]
    posts = [r for r in simulator.requests() if r["method"] == "POST"]
    searches = [r for r in simulator.requests() if r["path"] == "/search/jobs"]

    assert len(posts) == case.posts, posts
    assert len(searches) <= len(trigger_outcome.runs)


@pytest.mark.parametrize("case", TRIGGER_CASES, ids=TRIGGER_IDS)
def test_trigger_fault_creates_once(
    trigger_outcome: TriggerOutcome, case: TriggerCase
) -> None:
    records = trigger_outcome.simulators[case.name].keboola_jobs()

    assert len(records) == case.jobs, records


@pytest.mark.parametrize("case", TRIGGER_CASES, ids=TRIGGER_IDS)
def test_trigger_fault_first_report(
    trigger_outcome: TriggerOutcome, case: TriggerCase
) -> None:
    document = trigger_outcome.first_status[case.job]

    assert document["error"] is not None
    assert case.first_error in document["error"]["message"]


@pytest.mark.parametrize("case", TRIGGER_CASES, ids=TRIGGER_IDS)
def test_trigger_fault_end_state(
    trigger_outcome: TriggerOutcome, case: TriggerCase
) -> None:
    document = trigger_outcome.final_status[case.job]
    trigger = document["trigger"]

    if case.state is None:
        assert trigger is None
        assert document["status"] == "active"
        assert "next try at" in document["error"]["message"]
    elif case.state == "rejected":
        assert trigger["state"] == "rejected"
        assert document["status"] == "failed"
        assert case.first_error in document["error"]["message"]
    else:
        records = trigger_outcome.simulators[case.name].keboola_jobs()
        assert trigger["state"] == "accepted"
        assert document["status"] == "completed"
        assert document["error"] is None
        assert trigger["keboola_job_id"] == records[0]["id"]
        assert variables_of(records[0])[TRIGGER_ID_VARIABLE] == trigger["id"]


@pytest.mark.parametrize("case", TRIGGER_CASES, ids=TRIGGER_IDS)
def test_trigger_fault_resend_keeps_id(
    trigger_outcome: TriggerOutcome, case: TriggerCase
) -> None:
    rows = trigger_outcome.workspace.query(
        "SELECT id, attempts FROM triggers WHERE job = ?", case.job
    )

    # A 429 releases its claim, so a trigger that waits for Retry-After has none.
    assert len(rows) == (0 if case.state is None else 1), rows
    if case.first_error == UNKNOWN:
        # Each send of the one trigger id counts as an attempt.
        assert rows[0]["attempts"] == case.posts


def test_trigger_faults_spare_bystander(trigger_outcome: TriggerOutcome) -> None:
    document = trigger_outcome.first_status[BYSTANDER]

    assert document["status"] == "completed"
    assert document["error"] is None
    assert len(trigger_outcome.simulators[BYSTANDER].keboola_jobs()) == 1


def test_trigger_faults_exit_cleanly(trigger_outcome: TriggerOutcome) -> None:
    for run in trigger_outcome.runs:
        assert_clean_exit(run)


def test_trigger_faults_settle(trigger_outcome: TriggerOutcome) -> None:
    assert len(trigger_outcome.runs) <= MAX_CYCLES


# Following the Keboola job


@dataclass(frozen=True)
class FollowCase:
    """One fault on ``GET /jobs/{id}`` while the Keboola job is followed.

    ``requests`` is the exact number of reads of the job in the cycle with
    the fault. ``outcome`` is ``recovered`` (the final status is recorded in
    that cycle), ``reported`` (an error on the job) or ``running`` (an
    unknown status, followed on).
    """

    name: str
    rule: dict[str, Any]
    requests: int
    outcome: str
    words: tuple[str, ...] = ()

    @property
    def job(self) -> str:
        return f"follow-{self.name}"


FIRST_JOB_ID = "1000001"
FOLLOW_CASES = [
    FollowCase(
        "429-retry-after-seconds",
        _once({"status": 429, "retry_after": 1}),
        2,
        "recovered",
    ),
    FollowCase(
        "429-retry-after-date",
        _once({"status": 429, "retry_after": "http-date", "retry_after_seconds": 2}),
        2,
        "recovered",
    ),
    FollowCase("500", {"status": 500}, RETRY_ATTEMPTS, "reported", ("500",)),
    FollowCase("502", {"status": 502}, RETRY_ATTEMPTS, "reported", ("502",)),
    FollowCase("503", {"status": 503}, RETRY_ATTEMPTS, "reported", ("503",)),
    FollowCase(
        "malformed-body", {"malformed": True}, RETRY_ATTEMPTS, "reported", ("not JSON",)
    ),
    FollowCase(
        "empty-body", {"empty": True}, RETRY_ATTEMPTS, "reported", ("not JSON",)
    ),
    FollowCase(
        "wrong-shape",
        {"wrong_shape": True},
        RETRY_ATTEMPTS,
        "reported",
        ("unexpected body",),
    ),
    FollowCase(
        "dropped-connection", {"drop": True}, RETRY_ATTEMPTS, "reported", ("failed",)
    ),
    FollowCase(
        "no-response", {"latency": 4}, RETRY_ATTEMPTS, "reported", ("timed out",)
    ),
    FollowCase("401", {"status": 401}, 1, "reported", ("401",)),
    FollowCase("403", {"status": 403}, 1, "reported", ("403",)),
    FollowCase("404", {"status": 404}, 1, "reported", ("404",)),
    FollowCase(
        "unknown-status",
        {"wrong_shape": {"id": FIRST_JOB_ID, "status": "parked"}},
        1,
        "running",
    ),
]


@dataclass
class FollowOutcome:
    """What the three cycles did, shared by the follow tests of this module."""

    simulators: dict[str, Simulator]
    runs: list[Run]
    fault_requests: dict[str, list[dict[str, Any]]]
    fault_status: dict[str, dict[str, Any]]
    final_status: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def follow_outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FollowOutcome]:
    """Trigger every job, follow them with faults, then without."""
    root: Path = tmp_path_factory.mktemp("keboola-follow-faults")
    simulators: dict[str, Simulator] = {}
    try:
        bystander = _start(
            scenario({"batch_bystander": terminal()}), simulators, BYSTANDER
        )
        workspace = Workspace(root, bystander)
        workspace.write_job(BYSTANDER, ["batch_bystander"])
        for case in FOLLOW_CASES:
            simulator = _start(scenario({"batch_a": terminal()}), simulators, case.name)
            workspace.write_job(case.job, ["batch_a"], simulator.url)
        runs = [workspace.apply()]

        for case in FOLLOW_CASES:
            simulator = simulators[case.name]
            simulator.reset()
            path = f"^/jobs/{FIRST_JOB_ID}$"
            simulator.add_faults(
                {"service": "keboola", "method": "GET", "path": path, **case.rule}
            )
        runs.append(workspace.apply())
        fault_requests = {name: sim.requests() for name, sim in simulators.items()}
        fault_status = workspace.status_files()

        for simulator in simulators.values():
            simulator.clear_faults()
        runs.append(workspace.apply())
        yield FollowOutcome(
            simulators, runs, fault_requests, fault_status, workspace.status_files()
        )
    finally:
        for simulator in simulators.values():
            simulator.stop()


FOLLOW_IDS = [case.name for case in FOLLOW_CASES]


@pytest.mark.parametrize("case", FOLLOW_CASES, ids=FOLLOW_IDS)
def test_follow_fault_request_count(
    follow_outcome: FollowOutcome, case: FollowCase
) -> None:
    reads = [
        r
        for r in follow_outcome.fault_requests[case.name]
        if r["path"] == f"/jobs/{FIRST_JOB_ID}"
    ]

    assert len(reads) == case.requests, reads
    assert len(reads) <= RETRY_ATTEMPTS


@pytest.mark.parametrize("case", FOLLOW_CASES, ids=FOLLOW_IDS)
def test_follow_fault_outcome(follow_outcome: FollowOutcome, case: FollowCase) -> None:
    document = follow_outcome.fault_status[case.job]
    trigger = document["trigger"]

    assert document["status"] == "completed"
    assert trigger["state"] == "accepted"
    if case.outcome == "recovered":
        assert trigger["keboola_status"] == "success"
        assert document["error"] is None
    elif case.outcome == "reported":
        for word in case.words:
            assert word in document["error"]["message"]
    else:
        assert trigger["keboola_status"] == "parked"
        assert document["error"] is None


@pytest.mark.parametrize("case", FOLLOW_CASES, ids=FOLLOW_IDS)
def test_follow_fault_recovers(follow_outcome: FollowOutcome, case: FollowCase) -> None:
    document = follow_outcome.final_status[case.job]

    assert document["trigger"]["keboola_status"] == "success"
    assert document["error"] is None
    assert len(follow_outcome.simulators[case.name].keboola_jobs()) == 1


def test_follow_faults_spare_bystander(follow_outcome: FollowOutcome) -> None:
    document = follow_outcome.fault_status[BYSTANDER]

    assert document["trigger"]["keboola_status"] == "success"
    assert document["error"] is None


def test_follow_faults_exit_cleanly(follow_outcome: FollowOutcome) -> None:
    for run in follow_outcome.runs:
        assert_clean_exit(run)
