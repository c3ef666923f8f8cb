"""OpenAI API faults: each batch read gets one fault, and other jobs go on.

Every case has its own job and its own simulator, so the requests that a
fault costs are counted on that simulator alone. All jobs run in the same
`tc apply`, beside a bystander job whose simulator has no fault. The first
cycle runs with the faults, the second one after they are removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    HTTP_TIMEOUT,
    RETRY_ATTEMPTS,
    Run,
    Workspace,
    assert_clean_exit,
    scenario,
    terminal,
)

from reconciler.simulator import Simulator


@dataclass(frozen=True)
class Case:
    """One fault on ``GET /v1/batches/{id}`` and what `tc` must do about it.

    ``requests`` is the exact number of reads of the batch in the first cycle.
    ``outcome`` is ``recovered`` (retried within the cycle and triggered),
    ``reported`` (an error on the job and the batch) or ``pending`` (the batch
    counts as not terminal).
    """

    name: str
    rule: dict[str, Any] | None
    requests: int
    outcome: str
    words: tuple[str, ...] = ()
    min_gap: float = 0.0

    @property
    def job(self) -> str:
        return f"openai-{self.name}"

    @property
    def batch_id(self) -> str:
        return "batch_" + self.name.replace("-", "_")


CASES = [
    Case(
        "429-retry-after-seconds",
        {"status": 429, "retry_after": 1, "times": 1},
        2,
        "recovered",
        min_gap=0.9,
    ),
    Case(
        "429-retry-after-date",
        {
            "status": 429,
            "retry_after": "http-date",
            "retry_after_seconds": 2,
            "times": 1,
        },
        2,
        "recovered",
        min_gap=0.9,
    ),
    Case(
        "429-retry-after-too-long",
        {"status": 429, "retry_after": 120},
        1,
        "reported",
        ("429",),
    ),
    Case("500", {"status": 500}, RETRY_ATTEMPTS, "reported", ("500",), 0.4),
    Case("502", {"status": 502}, RETRY_ATTEMPTS, "reported", ("502",), 0.4),
    Case("503", {"status": 503}, RETRY_ATTEMPTS, "reported", ("503",), 0.4),
    Case(
        "malformed-body",
        {"malformed": True},
        RETRY_ATTEMPTS,
        "reported",
        ("not JSON",),
        0.4,
    ),
    Case("empty-body", {"empty": True}, RETRY_ATTEMPTS, "reported", ("not JSON",), 0.4),
    Case(
        "wrong-shape",
        {"wrong_shape": True},
        RETRY_ATTEMPTS,
        "reported",
        ("unexpected body",),
        0.4,
    ),
    Case(
        "dropped-connection",
        {"drop": True},
        RETRY_ATTEMPTS,
        "reported",
        ("failed",),
        0.4,
    ),
    Case(
        "no-response",
        {"latency": 4},
        RETRY_ATTEMPTS,
        "reported",
        ("timed out",),
        0.4,
    ),
    Case("401", {"status": 401}, 1, "reported", ("401",)),
    Case("403", {"status": 403}, 1, "reported", ("403",)),
    # No fault: the simulator does not know the batch until the second cycle.
    Case("404-unknown-batch", None, 1, "reported", ("404", "check the batch id")),
    Case("unknown-status", {"status_value": "under_review"}, 1, "pending"),
]
BYSTANDER = "bystander"


@dataclass
class Outcome:
    """What the two cycles did, shared by the tests of this module."""

    workspace: Workspace
    simulators: dict[str, Simulator]
    first: Run
    second: Run
    first_requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    first_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    second_status: dict[str, dict[str, Any]] = field(default_factory=dict)


def _scenario_for(case: Case) -> dict[str, Any]:
    batches = {} if case.name.startswith("404") else {case.batch_id: terminal()}
    faults = []
    if case.rule is not None:
        path = f"^/v1/batches/{case.batch_id}$"
        faults.append({"service": "openai", "method": "GET", "path": path, **case.rule})
    return scenario(batches, faults=faults)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """Run one cycle with every fault and one without, in one workspace."""
    root: Path = tmp_path_factory.mktemp("openai-faults")
    simulators: dict[str, Simulator] = {}
    try:
        bystander = Simulator(scenario({"batch_bystander": terminal()}))
        bystander.start()
        simulators[BYSTANDER] = bystander
        workspace = Workspace(root, bystander)
        workspace.write_job(BYSTANDER, ["batch_bystander"])
        for case in CASES:
            simulator = Simulator(_scenario_for(case))
            simulator.start()
            simulators[case.name] = simulator
            workspace.write_job(case.job, [case.batch_id], simulator.url)

        first = workspace.apply()
        first_requests = {
            name: simulator.requests() for name, simulator in simulators.items()
        }
        first_status = workspace.status_files()

        for case in CASES:
            simulators[case.name].clear_faults()
            simulators[case.name].put_batches({case.batch_id: terminal()})
        second = workspace.apply()

        yield Outcome(
            workspace,
            simulators,
            first,
            second,
            first_requests,
            first_status,
            workspace.status_files(),
        )
    finally:
        for simulator in simulators.values():
            simulator.stop()


def _batch_reads(outcome: Outcome, case: Case) -> list[dict[str, Any]]:
    path = f"/v1/batches/{case.batch_id}"
    return [
        entry
        for entry in outcome.first_requests[case.name]
        if entry["method"] == "GET" and entry["path"] == path
    ]


def _triggers(outcome: Outcome, case: Case) -> int:
    return len(outcome.simulators[case.name].keboola_jobs())


IDS = [case.name for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_openai_fault_request_count(outcome: Outcome, case: Case) -> None:
    reads = _batch_reads(outcome, case)

    assert len(reads) == case.requests, reads
    assert len(reads) <= RETRY_ATTEMPTS


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_openai_fault_backoff(outcome: Outcome, case: Case) -> None:
    times = [entry["time"] for entry in _batch_reads(outcome, case)]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]

    assert all(gap >= case.min_gap for gap in gaps), gaps


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_openai_fault_outcome(outcome: Outcome, case: Case) -> None:
    document = outcome.first_status[case.job]
    batch = document["batches"][0]

    if case.outcome == "recovered":
        assert document["status"] == "completed"
        assert document["error"] is None
        assert _triggers(outcome, case) == 1
    elif case.outcome == "reported":
        assert document["status"] == "active"
        assert document["trigger"] is None
        for word in case.words:
            assert word in batch["error"]
        assert case.batch_id in document["error"]["message"]
    else:
        assert batch["status"] == "under_review"
        assert document["status"] == "active"
        assert document["summary"]["pending"] == 1
        assert document["trigger"] is None


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_openai_fault_recovers(outcome: Outcome, case: Case) -> None:
    document = outcome.second_status[case.job]

    assert document["status"] == "completed"
    assert document["error"] is None
    assert "error" not in document["batches"][0]
    assert _triggers(outcome, case) == 1


def test_openai_faults_spare_bystander(outcome: Outcome) -> None:
    document = outcome.first_status[BYSTANDER]

    assert document["status"] == "completed"
    assert document["error"] is None
    assert len(outcome.simulators[BYSTANDER].keboola_jobs()) == 1


def test_openai_faults_exit_cleanly(outcome: Outcome) -> None:
    assert_clean_exit(outcome.first)
    assert outcome.first.returncode == 1
    assert_clean_exit(outcome.second)
    assert outcome.second.returncode == 0, outcome.second.describe()


def test_openai_faults_cycle_bounded(outcome: Outcome) -> None:
    # The reads run concurrently. Three attempts take at most the HTTP timeout
    # each, with at most 1.5 s and 2 s of backoff between them. The last 10 s
    # are for starting tc and the other jobs on a loaded machine.
    limit = RETRY_ATTEMPTS * HTTP_TIMEOUT + 1.5 + 2 + 10
    assert outcome.first.seconds < limit, outcome.first.describe()
