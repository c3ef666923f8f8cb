"""Tests of the simulator's OpenAI and Keboola APIs, its scenarios and its CLI.

Every test starts a real server on 127.0.0.1. Most pass a manual clock, so
batch and job progress is exact; one test per API checks real time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from reconciler.simulator import ScenarioError, Simulator, load_scenario

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "simulator" / "quickstart.yaml"

OPENAI_KEY = "sk-sim-test"
OPENAI_HEADERS = {"Authorization": f"Bearer {OPENAI_KEY}"}
KEBOOLA_TOKEN = "sim-test-token"
KEBOOLA_HEADERS = {"X-StorageApi-Token": KEBOOLA_TOKEN}
COMPONENT = "kds-team.app-custom-python"
VARIABLES = [
    "batch_ids_completed",
    "batch_ids_failed",
    "batch_count_total",
    "batch_count_completed",
    "batch_count_failed",
]
VALUES = {
    "batch_ids_completed": '["batch_a", "batch_b"]',
    "batch_ids_failed": '["batch_c"]',
    "batch_count_total": "3",
    "batch_count_completed": "2",
    "batch_count_failed": "1",
}

# Every field of a Batch object in the OpenAI reference.
BATCH_FIELDS = {
    "id",
    "object",
    "endpoint",
    "model",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "metadata",
    "usage",
}

PRESET_STATUSES = {
    "completes": ["validating", "in_progress", "finalizing", "completed"],
    "fails": ["validating", "failed"],
    "expires": ["validating", "in_progress", "expired"],
    "cancels": ["validating", "in_progress", "cancelling", "cancelled"],
}
TIMESTAMP_FIELDS = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}

StartSimulator = Callable[..., Simulator]


class ManualClock:
    """Clock for the simulator that moves only when the test advances it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_scenario(
    batches: dict[str, Any] | None = None,
    configurations: list[dict[str, Any]] | None = None,
    **keboola: Any,
) -> dict[str, Any]:
    if configurations is None:
        configurations = [
            {"component": COMPONENT, "id": "12345", "variables": VARIABLES}
        ]
    return {
        "openai": {"api_keys": [OPENAI_KEY], "batches": batches or {}},
        "keboola": {
            "tokens": [KEBOOLA_TOKEN],
            "configurations": configurations,
            **keboola,
        },
    }


def openai_client(sim: Simulator) -> httpx.Client:
    return httpx.Client(base_url=sim.url, headers=OPENAI_HEADERS, timeout=5)


def keboola_client(sim: Simulator) -> httpx.Client:
    return httpx.Client(base_url=sim.url, headers=KEBOOLA_HEADERS, timeout=5)


def job_body(config: str = "12345", **changes: Any) -> dict[str, Any]:
    values = [{"name": name, "value": value} for name, value in VALUES.items()]
    body: dict[str, Any] = {
        "mode": "run",
        "component": COMPONENT,
        "config": config,
        "variableValuesData": {"values": values},
    }
    body.update(changes)
    return body


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


# OpenAI batches


@pytest.mark.parametrize("preset", sorted(PRESET_STATUSES))
def test_preset_steps_parse_as_batch(simulator: StartSimulator, preset: str) -> None:
    clock = ManualClock()
    batches = {"batch_x": {"preset": preset, "step_seconds": 10}}
    sim = simulator(make_scenario(batches), clock=clock)
    expected = PRESET_STATUSES[preset]
    seen: list[str] = []
    with openai_client(sim) as client:
        for _ in range(len(expected) + 1):
            response = client.get("/v1/batches/batch_x")
            assert response.status_code == 200
            body = response.json()
            assert set(body) == BATCH_FIELDS
            batch = Batch.model_validate(body)
            seen.append(batch.status)
            clock.advance(10)
    # The last read is one step after the terminal status, which stays.
    assert seen == [*expected, expected[-1]]


@pytest.mark.parametrize("preset", sorted(PRESET_STATUSES))
def test_preset_timestamps_set_on_entry(simulator: StartSimulator, preset: str) -> None:
    clock = ManualClock()
    started = clock.now
    batches = {"batch_x": {"preset": preset, "step_seconds": 10}}
    sim = simulator(make_scenario(batches), clock=clock)
    expected = PRESET_STATUSES[preset]
    with openai_client(sim) as client:
        for step, status in enumerate(expected):
            body = client.get("/v1/batches/batch_x").json()
            assert body["status"] == status
            assert body["created_at"] == int(started)
            assert body["expires_at"] == int(started) + 86400
            entered = {TIMESTAMP_FIELDS.get(name) for name in expected[: step + 1]}
            for name, field in TIMESTAMP_FIELDS.items():
                if field in entered:
                    entered_step = expected.index(name)
                    assert body[field] == int(started) + 10 * entered_step, field
                else:
                    assert body[field] is None, field
            clock.advance(10)


def test_timeline_starts_at_first_read(simulator: StartSimulator) -> None:
    clock = ManualClock()
    batches = {"batch_x": {"preset": "completes", "step_seconds": 1}}
    sim = simulator(make_scenario(batches), clock=clock)
    clock.advance(3600)
    with openai_client(sim) as client:
        first = client.get("/v1/batches/batch_x").json()
        clock.advance(1.5)
        second = client.get("/v1/batches/batch_x").json()
    assert first["status"] == "validating"
    assert first["created_at"] == int(clock.now - 1.5)
    assert second["status"] == "in_progress"


def test_status_progresses_in_real_time(simulator: StartSimulator) -> None:
    batches = {"batch_x": {"preset": "completes", "step_seconds": 0.2}}
    sim = simulator(make_scenario(batches))
    statuses: list[str] = []
    started = time.monotonic()
    with openai_client(sim) as client:
        while time.monotonic() - started < 5:
            status = client.get("/v1/batches/batch_x").json()["status"]
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            if status == "completed":
                break
            time.sleep(0.03)
    elapsed = time.monotonic() - started
    assert statuses[0] == "validating"
    assert statuses[-1] == "completed"
    order = PRESET_STATUSES["completes"]
    assert [order.index(status) for status in statuses] == sorted(
        order.index(status) for status in statuses
    )
    assert elapsed >= 0.6


def test_fails_preset_reports_errors(simulator: StartSimulator) -> None:
    clock = ManualClock()
    batches = {"batch_bad": {"preset": "fails", "step_seconds": 1}}
    sim = simulator(make_scenario(batches), clock=clock)
    with openai_client(sim) as client:
        validating = client.get("/v1/batches/batch_bad").json()
        clock.advance(1)
        failed = client.get("/v1/batches/batch_bad").json()
    assert validating["errors"] is None
    assert failed["status"] == "failed"
    assert failed["errors"]["object"] == "list"
    assert failed["errors"]["data"][0]["code"] == "invalid_json_line"
    assert failed["failed_at"] == int(clock.now)
    assert failed["in_progress_at"] is None
    assert failed["output_file_id"] is None
    assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}


def test_expires_preset_sets_both_files(simulator: StartSimulator) -> None:
    clock = ManualClock()
    batches = {
        "batch_late": {
            "preset": "expires",
            "step_seconds": 1,
            "request_counts": {"total": 100, "completed": 40, "failed": 0},
        }
    }
    sim = simulator(make_scenario(batches), clock=clock)
    with openai_client(sim) as client:
        client.get("/v1/batches/batch_late")
        clock.advance(2)
        expired = client.get("/v1/batches/batch_late").json()
    assert expired["status"] == "expired"
    assert expired["output_file_id"] == "file-out-late"
    assert expired["error_file_id"] == "file-err-late"
    assert expired["request_counts"] == {"total": 100, "completed": 40, "failed": 0}


def test_completes_preset_file_defaults(simulator: StartSimulator) -> None:
    clock = ManualClock()
    batches = {
        "batch_ok": {"preset": "completes", "step_seconds": 1},
        "batch_all_failed": {
            "preset": "completes",
            "step_seconds": 1,
            "request_counts": {"total": 5, "completed": 0, "failed": 5},
        },
    }
    sim = simulator(make_scenario(batches), clock=clock)
    with openai_client(sim) as client:
        running = client.get("/v1/batches/batch_ok").json()
        client.get("/v1/batches/batch_all_failed")
        clock.advance(3)
        done = client.get("/v1/batches/batch_ok").json()
        all_failed = client.get("/v1/batches/batch_all_failed").json()
    assert running["output_file_id"] is None
    assert done["output_file_id"] == "file-out-ok"
    assert done["error_file_id"] is None
    assert all_failed["status"] == "completed"
    assert all_failed["output_file_id"] is None
    assert all_failed["error_file_id"] == "file-err-all_failed"


def test_in_progress_counts_grow(simulator: StartSimulator) -> None:
    clock = ManualClock()
    batches = {
        "batch_x": {
            "preset": "completes",
            "step_seconds": 10,
            "request_counts": {"total": 100, "completed": 90, "failed": 10},
        }
    }
    sim = simulator(make_scenario(batches), clock=clock)
    with openai_client(sim) as client:
        validating = client.get("/v1/batches/batch_x").json()
        clock.advance(15)
        halfway = client.get("/v1/batches/batch_x").json()
        clock.advance(10)
        finalizing = client.get("/v1/batches/batch_x").json()
    assert validating["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert halfway["request_counts"] == {"total": 100, "completed": 45, "failed": 5}
    assert finalizing["request_counts"] == {"total": 100, "completed": 90, "failed": 10}


def test_script_with_azure_file_ids(simulator: StartSimulator) -> None:
    clock = ManualClock()
    script = [
        {"status": "validating", "seconds": 1},
        {"status": "in_progress", "seconds": 2},
        {"status": "completed"},
    ]
    batches = {
        "batch_azure": {
            "script": script,
            "output_file_id": "",
            "error_file_id": None,
            "metadata": {"team": "search"},
        }
    }
    sim = simulator(make_scenario(batches), clock=clock)
    with openai_client(sim) as client:
        client.get("/v1/batches/batch_azure")
        clock.advance(1)
        in_progress = client.get("/v1/batches/batch_azure").json()
        clock.advance(2)
        completed = client.get("/v1/batches/batch_azure").json()
    assert in_progress["status"] == "in_progress"
    assert completed["status"] == "completed"
    assert completed["output_file_id"] == ""
    assert completed["error_file_id"] is None
    assert completed["metadata"] == {"team": "search"}
    Batch.model_validate(completed)


def test_unknown_batch_returns_404(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    with openai_client(sim) as client:
        response = client.get("/v1/batches/batch_missing")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "No batch found with id 'batch_missing'.",
            "type": "invalid_request_error",
            "param": None,
            "code": "batch_not_found",
        }
    }
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk-wrong"},
        {"Authorization": OPENAI_KEY},
        {"api-key": "sk-wrong"},
    ],
    ids=["missing", "wrong-bearer", "no-bearer-prefix", "wrong-api-key"],
)
def test_bad_api_key_returns_401(
    simulator: StartSimulator, headers: dict[str, str]
) -> None:
    sim = simulator(make_scenario({"batch_x": {"preset": "completes"}}))
    response = httpx.get(f"{sim.url}/v1/batches/batch_x", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert "sk-wrong" not in error["message"]


def test_azure_api_key_header_accepted(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario({"batch_x": {"preset": "completes"}}))
    response = httpx.get(
        f"{sim.url}/v1/batches/batch_x", headers={"api-key": OPENAI_KEY}
    )
    assert response.status_code == 200


def test_list_pages_newest_first(simulator: StartSimulator) -> None:
    clock = ManualClock()
    batch_ids = [f"batch_{index}" for index in range(5)]
    sim = simulator(
        make_scenario({batch_id: {"preset": "completes"} for batch_id in batch_ids}),
        clock=clock,
    )
    with openai_client(sim) as client:
        # Reading in reverse order gives batch_0 the latest created_at.
        for batch_id in reversed(batch_ids):
            client.get(f"/v1/batches/{batch_id}")
            clock.advance(1)
        first = client.get("/v1/batches", params={"limit": 2}).json()
        second = client.get(
            "/v1/batches", params={"limit": 2, "after": first["data"][-1]["id"]}
        ).json()
        last = client.get("/v1/batches", params={"limit": 2, "after": "batch_3"}).json()
        default = client.get("/v1/batches").json()
    assert first["object"] == "list"
    assert [batch["id"] for batch in first["data"]] == ["batch_0", "batch_1"]
    assert first["first_id"] == "batch_0"
    assert first["last_id"] == "batch_1"
    assert first["has_more"] is True
    assert [batch["id"] for batch in second["data"]] == ["batch_2", "batch_3"]
    assert [batch["id"] for batch in last["data"]] == ["batch_4"]
    assert last["has_more"] is False
    assert len(default["data"]) == 5


def test_list_rejects_invalid_limit(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    with openai_client(sim) as client:
        for limit in ("0", "101", "ten"):
            response = client.get("/v1/batches", params={"limit": limit})
            assert response.status_code == 400, limit
            assert response.json()["error"]["param"] == "limit"


def test_openai_sdk_reads_batches(simulator: StartSimulator) -> None:
    batch_ids = [f"batch_sdk_{index}" for index in range(5)]
    sim = simulator(
        make_scenario({batch_id: {"preset": "completes"} for batch_id in batch_ids})
    )
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{sim.url}/v1", max_retries=0)
    batch = client.batches.retrieve("batch_sdk_0")
    listed = [item.id for item in client.batches.list(limit=2)]
    assert batch.id == "batch_sdk_0"
    assert batch.status == "validating"
    assert sorted(listed) == sorted(batch_ids)
    assert len(listed) == 5


def test_cancel_moves_to_cancelled(simulator: StartSimulator) -> None:
    clock = ManualClock()
    batches = {"batch_x": {"preset": "completes", "step_seconds": 10}}
    sim = simulator(make_scenario(batches), clock=clock)
    with openai_client(sim) as client:
        client.get("/v1/batches/batch_x")
        clock.advance(15)
        cancelling = client.post("/v1/batches/batch_x/cancel").json()
        clock.advance(10)
        cancelled = client.get("/v1/batches/batch_x").json()
        again = client.post("/v1/batches/batch_x/cancel")
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancelling_at"] == int(clock.now - 10)
    assert cancelled["status"] == "cancelled"
    assert cancelled["in_progress_at"] is not None
    assert cancelled["finalizing_at"] is None
    assert cancelled["request_counts"]["completed"] == 5
    assert again.status_code == 400


def test_cancel_unknown_batch_returns_404(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    with openai_client(sim) as client:
        response = client.post("/v1/batches/batch_missing/cancel")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "batch_not_found"


def test_unknown_openai_route_returns_404(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    with openai_client(sim) as client:
        response = client.delete("/v1/batches/batch_x")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "Invalid URL (DELETE /v1/batches/batch_x)"
    )


# Keboola queue


def test_create_job_returns_created(simulator: StartSimulator) -> None:
    clock = ManualClock()
    sim = simulator(make_scenario(), clock=clock)
    with keboola_client(sim) as client:
        response = client.post("/jobs", json=job_body())
    assert response.status_code == 201
    job = response.json()
    assert job["status"] == "created"
    assert job["desiredStatus"] == "processing"
    assert job["id"] == job["runId"]
    assert job["url"] == f"{sim.url}/jobs/{job['id']}"
    assert job["createdTime"] == iso(clock.now)
    assert job["createdTime"].endswith("+00:00")
    assert job["startTime"] is None
    assert job["isFinished"] is False
    assert job["component"] == COMPONENT
    assert job["config"] == "12345"
    assert job["variableValuesData"] == job_body()["variableValuesData"]
    for field in ("result", "metrics", "backend", "configData", "usageData"):
        assert job[field] == [], field
    assert KEBOOLA_TOKEN not in response.text


def test_job_advances_to_success(simulator: StartSimulator) -> None:
    clock = ManualClock()
    sim = simulator(make_scenario(job_seconds=4), clock=clock)
    with keboola_client(sim) as client:
        job_id = client.post("/jobs", json=job_body()).json()["id"]
        statuses = []
        for _ in range(3):
            statuses.append(client.get(f"/jobs/{job_id}").json())
            clock.advance(2)
    assert [job["status"] for job in statuses] == ["created", "processing", "success"]
    processing, success = statuses[1], statuses[2]
    assert processing["startTime"] == iso(clock.now - 4)
    assert processing["endTime"] is None
    assert success["isFinished"] is True
    assert success["endTime"] == iso(clock.now - 2)
    assert success["durationSeconds"] == 2
    assert success["result"]["message"] == "Component processing finished."


def test_missing_variable_ends_in_error(simulator: StartSimulator) -> None:
    clock = ManualClock()
    sim = simulator(make_scenario(job_seconds=2), clock=clock)
    values = [{"name": "batch_count_total", "value": "3"}]
    with keboola_client(sim) as client:
        created = client.post(
            "/jobs", json=job_body(variableValuesData={"values": values})
        )
        clock.advance(2)
        job = client.get(f"/jobs/{created.json()['id']}").json()
    assert created.status_code == 201
    assert job["status"] == "error"
    assert (
        job["result"]["message"]
        == 'No value provided for variable "batch_ids_completed".'
    )
    assert job["result"]["error"]["exceptionId"].startswith("exc-")


def test_no_variable_values_ends_in_error(simulator: StartSimulator) -> None:
    clock = ManualClock()
    sim = simulator(make_scenario(job_seconds=2), clock=clock)
    body = {"component": COMPONENT, "config": "12345"}
    with keboola_client(sim) as client:
        job_id = client.post("/jobs", json=body).json()["id"]
        clock.advance(2)
        job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "error"
    assert job["result"]["message"].startswith("No variable values provided")


def test_unlinked_variables_still_succeed(simulator: StartSimulator) -> None:
    clock = ManualClock()
    configurations = [{"component": COMPONENT, "id": "777"}]
    sim = simulator(make_scenario(configurations=configurations), clock=clock)
    with keboola_client(sim) as client:
        job_id = client.post("/jobs", json=job_body("777")).json()["id"]
        clock.advance(2)
        job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "success"


def test_fail_with_forces_error(simulator: StartSimulator) -> None:
    clock = ManualClock()
    configurations = [
        {"component": COMPONENT, "id": "9", "fail_with": "Script failed."}
    ]
    sim = simulator(make_scenario(configurations=configurations), clock=clock)
    with keboola_client(sim) as client:
        job_id = client.post("/jobs", json=job_body("9")).json()["id"]
        clock.advance(2)
        job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "error"
    assert job["result"]["message"] == "Script failed."


def test_config_lock_makes_job_wait(simulator: StartSimulator) -> None:
    clock = ManualClock()
    configurations = [
        {"component": COMPONENT, "id": "1"},
        {"component": COMPONENT, "id": "2"},
    ]
    sim = simulator(
        make_scenario(configurations=configurations, job_seconds=4), clock=clock
    )
    with keboola_client(sim) as client:
        first = client.post("/jobs", json=job_body("1")).json()["id"]
        clock.advance(1)
        second = client.post("/jobs", json=job_body("1")).json()["id"]
        other = client.post("/jobs", json=job_body("2")).json()["id"]
        clock.advance(2)  # t=3: first processing, second ready but locked
        at_3 = {
            job_id: client.get(f"/jobs/{job_id}").json()["status"]
            for job_id in (first, second, other)
        }
        clock.advance(1)  # t=4: first done, second starts
        at_4 = {
            job_id: client.get(f"/jobs/{job_id}").json()["status"]
            for job_id in (first, second)
        }
        clock.advance(2)  # t=6: second done
        second_done = client.get(f"/jobs/{second}").json()
    assert at_3 == {first: "processing", second: "waiting", other: "processing"}
    assert at_4 == {first: "success", second: "processing"}
    assert second_done["status"] == "success"
    assert second_done["startTime"] == iso(clock.now - 2)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"config": "12345"}, 'The "component" field must be a non-empty string.'),
        (
            {"component": COMPONENT},
            'The "config" field is required unless "configData" is sent.',
        ),
        (
            {"component": "keboola.unknown", "config": "1"},
            'Component "keboola.unknown" not found.',
        ),
        (
            {"component": COMPONENT, "config": "404"},
            f'Configuration "404" of component "{COMPONENT}" not found.',
        ),
        (
            {"component": COMPONENT, "config": "off"},
            f'Configuration "off" of component "{COMPONENT}" is disabled.',
        ),
        (
            {"component": COMPONENT, "config": "12345", "mode": "fast"},
            'Invalid mode "fast". Allowed values: run, forceRun, debug.',
        ),
        (
            {
                "component": COMPONENT,
                "config": "12345",
                "variableValuesId": "101",
                "variableValuesData": {"values": [{"name": "a", "value": "1"}]},
            },
            'Provide either "variableValuesId" or "variableValuesData", but not both.',
        ),
        (
            {
                "component": COMPONENT,
                "config": "12345",
                "variableValuesData": {"values": [{"name": "a", "value": ""}]},
            },
            "variableValuesData.values[0].value must be a non-empty string, got ''.",
        ),
        (
            {
                "component": COMPONENT,
                "config": "12345",
                "variableValuesData": {"values": [{"name": "a", "value": 3}]},
            },
            "variableValuesData.values[0].value must be a non-empty string, got 3.",
        ),
        ([1, 2], "The request body must be a JSON object."),
    ],
    ids=[
        "missing-component",
        "missing-config",
        "unknown-component",
        "unknown-config",
        "disabled-config",
        "invalid-mode",
        "both-variable-sources",
        "empty-value",
        "number-value",
        "not-an-object",
    ],
)
def test_create_rejects_invalid_body(
    simulator: StartSimulator, body: object, message: str
) -> None:
    configurations: list[dict[str, Any]] = [
        {"component": COMPONENT, "id": "12345", "variables": VARIABLES},
        {"component": COMPONENT, "id": "off", "disabled": True},
    ]
    sim = simulator(make_scenario(configurations=configurations))
    with keboola_client(sim) as client:
        response = client.post("/jobs", json=body)
        search = client.get("/search/jobs").json()
    assert response.status_code == 400
    error = response.json()
    assert error["error"] == message
    assert error["code"] == 400
    assert error["status"] == "error"
    assert error["exceptionId"].startswith("exc-")
    assert error["context"] == {}
    assert search == []


def test_create_rejects_invalid_json(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    with keboola_client(sim) as client:
        response = client.post("/jobs", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"] == "The request body is not valid JSON."


def test_force_run_starts_disabled_config(simulator: StartSimulator) -> None:
    configurations = [{"component": COMPONENT, "id": "off", "disabled": True}]
    sim = simulator(make_scenario(configurations=configurations))
    with keboola_client(sim) as client:
        response = client.post("/jobs", json=job_body("off", mode="forceRun"))
    assert response.status_code == 201
    assert response.json()["mode"] == "forceRun"


def test_config_data_is_recorded(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    config_data = {"parameters": {"batch_count_total": "3"}}
    body = {"mode": "run", "component": COMPONENT, "configData": config_data}
    with keboola_client(sim) as client:
        job = client.post("/jobs", json=body).json()
    records = sim.keboola_jobs()
    assert job["configData"] == config_data
    assert job["config"] is None
    assert records[0]["body"]["configData"] == config_data


def test_invalid_token_returns_401(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    for headers in ({}, {"X-StorageApi-Token": "wrong"}):
        response = httpx.post(f"{sim.url}/jobs", json=job_body(), headers=headers)
        assert response.status_code == 401
        error = response.json()
        assert error["error"] == "Invalid access token"
        assert error["status"] == "error"
        assert error["exceptionId"].startswith("exc-")
    assert sim.keboola_jobs() == []


def test_unknown_job_returns_404(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    with keboola_client(sim) as client:
        response = client.get("/jobs/42")
        kill = client.post("/jobs/42/kill")
    assert response.status_code == 404
    assert response.json()["error"] == 'Job "42" not found'
    assert kill.status_code == 404


def test_wrong_method_returns_405(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    with keboola_client(sim) as client:
        response = client.get("/jobs")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_kill_cancels_waiting_job(simulator: StartSimulator) -> None:
    clock = ManualClock()
    sim = simulator(make_scenario(job_seconds=4), clock=clock)
    with keboola_client(sim) as client:
        job_id = client.post("/jobs", json=job_body()).json()["id"]
        killed = client.post(f"/jobs/{job_id}/kill").json()
        clock.advance(10)
        later = client.get(f"/jobs/{job_id}").json()
        again = client.post(f"/jobs/{job_id}/kill")
    assert killed["status"] == "cancelled"
    assert killed["desiredStatus"] == "terminating"
    assert later["status"] == "cancelled"
    assert later["startTime"] is None
    assert again.status_code == 400
    assert "not in one of killable states" in again.json()["error"]


def test_kill_terminates_processing_job(simulator: StartSimulator) -> None:
    clock = ManualClock()
    sim = simulator(make_scenario(job_seconds=4), clock=clock)
    with keboola_client(sim) as client:
        job_id = client.post("/jobs", json=job_body()).json()["id"]
        clock.advance(3)
        terminating = client.post(f"/jobs/{job_id}/kill").json()
        clock.advance(2)
        terminated = client.get(f"/jobs/{job_id}").json()
    assert terminating["status"] == "terminating"
    assert terminated["status"] == "terminated"
    assert terminated["isFinished"] is True


def test_kill_releases_config_lock(simulator: StartSimulator) -> None:
    clock = ManualClock()
    sim = simulator(make_scenario(job_seconds=10), clock=clock)
    with keboola_client(sim) as client:
        first = client.post("/jobs", json=job_body()).json()["id"]
        second = client.post("/jobs", json=job_body()).json()["id"]
        clock.advance(6)
        client.post(f"/jobs/{first}/kill")
        clock.advance(5)  # first terminated at t=11
        second_job = client.get(f"/jobs/{second}").json()
    assert second_job["status"] == "processing"
    assert second_job["startTime"] == iso(clock.now)


def test_search_filters_and_pages(simulator: StartSimulator) -> None:
    clock = ManualClock()
    configurations = [
        {"component": COMPONENT, "id": "1"},
        {"component": COMPONENT, "id": "2"},
        {"component": "keboola.ex-http", "id": "1"},
    ]
    sim = simulator(
        make_scenario(configurations=configurations, job_seconds=2), clock=clock
    )
    with keboola_client(sim) as client:

        def create(config: str, component: str = COMPONENT) -> str:
            body = job_body(config, component=component)
            job_id: str = client.post("/jobs", json=body).json()["id"]
            return job_id

        def search(params: Any) -> list[dict[str, Any]]:
            jobs: list[dict[str, Any]] = client.get(
                "/search/jobs", params=params
            ).json()
            return jobs

        ids = []
        for config, component in (
            ("1", COMPONENT),
            ("2", COMPONENT),
            ("1", COMPONENT),
            ("1", "keboola.ex-http"),
        ):
            ids.append(create(config, component))
            clock.advance(10)
        # The last job is still "created" when the searches run.
        ids.append(create("2"))
        first_created = iso(clock.now - 40)
        third_created = iso(clock.now - 20)

        everything = search({})
        by_config = search({"componentId": COMPONENT, "configId": "1"})
        by_alias = search({"component": COMPONENT, "config": "1"})
        recent = search(
            {
                "createdTimeFrom": third_created,
                "createdTimeTo": iso(clock.now - 1),
                "sortBy": "createdTime",
                "sortOrder": "asc",
            }
        )
        pages = [search({"limit": 3, "offset": offset}) for offset in (0, 3)]
        succeeded = search({"status": "success"})
        created_or_succeeded = search(
            [("status[]", "created"), ("status[]", "success")]
        )
        # A repeated plain key keeps only its last value, as in PHP.
        last_status_only = search([("status", "created"), ("status", "success")])

    newest_first = list(reversed(ids))
    assert [job["id"] for job in everything] == newest_first
    assert everything[-1]["createdTime"] == first_created
    assert everything[0]["variableValuesData"] == job_body()["variableValuesData"]
    assert [job["id"] for job in by_config] == [ids[2], ids[0]]
    assert by_alias == by_config
    assert [job["id"] for job in recent] == [ids[2], ids[3]]
    assert [len(page) for page in pages] == [3, 2]
    assert [job["id"] for job in pages[0] + pages[1]] == newest_first
    assert [job["id"] for job in succeeded] == newest_first[1:]
    assert [job["id"] for job in created_or_succeeded] == newest_first
    assert [job["id"] for job in last_status_only] == newest_first[1:]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "501"},
        {"limit": "0"},
        {"offset": "-1"},
        {"sortBy": "colour"},
        {"sortOrder": "up"},
        {"createdTimeFrom": "yesterday"},
        {"createdTimeFrom": "2026-01-01T00:00:00"},
    ],
    ids=[
        "limit-above-max",
        "limit-zero",
        "negative-offset",
        "sort-by",
        "sort-order",
        "relative-time",
        "no-offset",
    ],
)
def test_search_rejects_invalid_query(
    simulator: StartSimulator, params: dict[str, str]
) -> None:
    sim = simulator(make_scenario())
    with keboola_client(sim) as client:
        response = client.get("/search/jobs", params=params)
    assert response.status_code == 400
    assert response.json()["status"] == "error"


def test_search_accepts_max_limit(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    with keboola_client(sim) as client:
        client.post("/jobs", json=job_body())
        response = client.get("/search/jobs", params={"limit": "500"})
    assert response.status_code == 200
    assert len(response.json()) == 1


def test_search_lag_hides_new_job(simulator: StartSimulator) -> None:
    clock = ManualClock()
    sim = simulator(make_scenario(search_lag_seconds=5), clock=clock)
    with keboola_client(sim) as client:
        job_id = client.post("/jobs", json=job_body()).json()["id"]
        clock.advance(4.9)
        before = client.get("/search/jobs").json()
        direct = client.get(f"/jobs/{job_id}")
        clock.advance(0.1)
        after = client.get("/search/jobs").json()
    assert before == []
    assert direct.status_code == 200
    assert [job["id"] for job in after] == [job_id]


def test_job_progresses_in_real_time(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario(job_seconds=0.4))
    statuses: list[str] = []
    started = time.monotonic()
    with keboola_client(sim) as client:
        job_id = client.post("/jobs", json=job_body()).json()["id"]
        while time.monotonic() - started < 5:
            status = client.get(f"/jobs/{job_id}").json()["status"]
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            if status == "success":
                break
            time.sleep(0.03)
    assert statuses[0] == "created"
    assert statuses[-1] == "success"
    assert time.monotonic() - started >= 0.4


# Scenarios and the command line


def test_quickstart_defines_job_batches() -> None:
    scenario = load_scenario(QUICKSTART)
    batches = scenario["openai"]["batches"]
    languages = ["en", "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "sv"]
    catalogue = {f"batch_catalogue_{language}" for language in languages}
    support = {f"batch_support_q{quarter}" for quarter in (1, 2, 3)}
    reviews = {
        "batch_reviews_shared",
        "batch_reviews_sentiment",
        "batch_reviews_summary",
    }
    assert set(batches) == catalogue | support | reviews
    presets = {batch_id: settings["preset"] for batch_id, settings in batches.items()}
    assert presets.pop("batch_catalogue_cs") == "fails"
    assert presets.pop("batch_catalogue_sv") == "fails"
    assert presets.pop("batch_catalogue_pl") == "expires"
    assert set(presets.values()) == {"completes"}
    assert scenario["openai"]["api_keys"] == ["sk-sim-quickstart"]
    assert scenario["keboola"]["tokens"] == ["sim-quickstart-token"]
    assert scenario["keboola"]["job_seconds"] == 2
    configurations = scenario["keboola"]["configurations"]
    assert [item["id"] for item in configurations] == ["12345", "12346", "12347"]
    for item in configurations:
        assert item["component"] == COMPONENT
        assert item["variables"] == VARIABLES


def test_quickstart_batches_finish_quickly(simulator: StartSimulator) -> None:
    clock = ManualClock()
    sim = simulator(load_scenario(QUICKSTART), clock=clock)
    headers = {"Authorization": "Bearer sk-sim-quickstart"}
    with httpx.Client(base_url=sim.url, headers=headers) as client:
        batch_ids = [
            batch["id"]
            for batch in client.get("/v1/batches", params={"limit": 100}).json()["data"]
        ]
        clock.advance(5)
        statuses = {
            batch_id: client.get(f"/v1/batches/{batch_id}").json()["status"]
            for batch_id in batch_ids
        }
    assert len(statuses) == 16
    assert statuses["batch_catalogue_cs"] == "failed"
    assert statuses["batch_catalogue_pl"] == "expired"
    assert list(statuses.values()).count("completed") == 13


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (
            {"openai": {"batches": {"batch_x": {}}}},
            "openai.batches.batch_x: set exactly one of 'preset' and 'script'",
        ),
        (
            {"openai": {"batches": {"batch_x": {"preset": "explodes"}}}},
            "openai.batches.batch_x.preset: unknown preset 'explodes'",
        ),
        (
            {
                "openai": {
                    "batches": {
                        "batch_x": {
                            "script": [{"status": "completed"}, {"status": "failed"}]
                        }
                    }
                }
            },
            "terminal status 'completed' must be the last step",
        ),
        (
            {
                "openai": {
                    "batches": {
                        "batch_x": {"script": [{"status": "validating", "seconds": 1}]}
                    }
                }
            },
            "the last step must have a terminal status",
        ),
        (
            {
                "openai": {
                    "batches": {
                        "batch_x": {
                            "preset": "completes",
                            "request_counts": {"total": 1, "completed": 2},
                        }
                    }
                }
            },
            "exceeds total",
        ),
        (
            {"keboola": {"configurations": [{"component": COMPONENT}]}},
            "keboola.configurations[0].id",
        ),
        ({"keboola": {"job_secs": 2}}, "unknown key(s) job_secs"),
        (
            {"faults": [{"service": "openai", "drop": True, "empty": True}]},
            "faults[0]: give exactly one effect",
        ),
        (
            {"faults": [{"service": "openai", "after_commit": {"drop": True}}]},
            "applies to the keboola service only",
        ),
        (
            {
                "faults": [
                    {"service": "keboola", "status": 503, "retry_after": "http-date"}
                ]
            },
            "retry_after_seconds: required",
        ),
        (
            {"faults": [{"service": "keboola", "path": "(", "drop": True}]},
            "invalid regular expression",
        ),
    ],
    ids=[
        "no-preset-or-script",
        "unknown-preset",
        "terminal-not-last",
        "no-terminal-step",
        "counts-over-total",
        "missing-config-id",
        "unknown-key",
        "two-effects",
        "after-commit-openai",
        "http-date-without-seconds",
        "invalid-path-regex",
    ],
)
def test_invalid_scenario_names_field(scenario: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as raised:
        Simulator(scenario)
    assert message in str(raised.value)


def test_load_scenario_rejects_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("openai: [unclosed\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="invalid YAML"):
        load_scenario(path)


def test_simulator_binds_loopback_only(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    assert sim.url == f"http://127.0.0.1:{sim.port}"
    assert sim.port > 0


def test_stop_closes_the_port(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    url = sim.url
    sim.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_sim/requests", timeout=2)


def _wait_for_file(path: Path, process: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, "the simulator exited early"
        assert time.monotonic() < deadline, f"{path} was not written in {seconds} s"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
def test_cli_serves_until_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler.simulator",
            "--scenario",
            str(QUICKSTART),
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_file(port_file, process, seconds=10)
        port = int(port_file.read_text(encoding="utf-8"))
        assert process.stdout is not None
        line = process.stdout.readline()
        response = httpx.get(
            f"http://127.0.0.1:{port}/v1/batches/batch_support_q1",
            headers={"Authorization": "Bearer sk-sim-quickstart"},
        )
        process.send_signal(stop_signal)
        exit_code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert line == f"simulator listening on http://127.0.0.1:{port}\n"
    assert response.status_code == 200
    assert exit_code == 0


def test_cli_rejects_invalid_scenario(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("keboola:\n  tokens: 5\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "reconciler.simulator", "--scenario", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "keboola.tokens" in result.stderr
    assert result.stdout == ""
