"""Tests of the simulator's fault rules and its control API under /_sim."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from reconciler.simulator import Simulator

OPENAI_KEY = "sk-sim-faults"
OPENAI_HEADERS = {"Authorization": f"Bearer {OPENAI_KEY}"}
KEBOOLA_TOKEN = "sim-faults-token"
KEBOOLA_HEADERS = {"X-StorageApi-Token": KEBOOLA_TOKEN}
COMPONENT = "kds-team.app-custom-python"
JOB_BODY = {
    "mode": "run",
    "component": COMPONENT,
    "config": "12345",
    "variableValuesData": {"values": [{"name": "batch_count_total", "value": "3"}]},
}

StartSimulator = Callable[..., Simulator]


def make_scenario(faults: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "openai": {
            "api_keys": [OPENAI_KEY],
            "batches": {
                "batch_a": {"preset": "completes", "step_seconds": 60},
                "batch_b": {"preset": "completes", "step_seconds": 60},
            },
        },
        "keboola": {
            "tokens": [KEBOOLA_TOKEN],
            "configurations": [{"component": COMPONENT, "id": "12345"}],
        },
        "faults": faults or [],
    }


def get_batch(
    sim: Simulator, batch_id: str = "batch_a", **options: Any
) -> httpx.Response:
    return httpx.get(
        f"{sim.url}/v1/batches/{batch_id}", headers=OPENAI_HEADERS, **options
    )


def create_job(sim: Simulator, **options: Any) -> httpx.Response:
    return httpx.post(
        f"{sim.url}/jobs", json=JOB_BODY, headers=KEBOOLA_HEADERS, **options
    )


def add_faults(sim: Simulator, rules: object) -> httpx.Response:
    return httpx.post(f"{sim.url}/_sim/faults", json=rules)


# Fault effects


def test_status_fault_uses_api_error_shape(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(
        sim,
        [
            {"service": "openai", "status": 503, "times": 1},
            {"service": "keboola", "status": 502, "times": 1},
        ],
    )
    openai_response = get_batch(sim)
    keboola_response = create_job(sim)
    assert openai_response.status_code == 503
    assert openai_response.json()["error"]["type"] == "server_error"
    assert openai_response.headers["x-request-id"].startswith("req_")
    assert keboola_response.status_code == 502
    body = keboola_response.json()
    assert body["error"] == "Internal Server Error occurred."
    assert body["exceptionId"].startswith("exc-")
    assert sim.keboola_jobs() == []


def test_rate_limit_fault_sets_retry_after(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "openai", "status": 429, "retry_after": 1.5})
    response = get_batch(sim)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1.5"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_retry_after_http_date(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(
        sim,
        {
            "service": "keboola",
            "status": 503,
            "retry_after": "http-date",
            "retry_after_seconds": 30,
        },
    )
    before = time.time()
    response = create_job(sim)
    retry_at = parsedate_to_datetime(response.headers["retry-after"]).timestamp()
    assert response.status_code == 503
    assert before + 29 <= retry_at <= time.time() + 31


def test_status_fault_custom_body_and_headers(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    body = json.dumps(
        {"error": {"type": "insufficient_quota", "code": "insufficient_quota"}}
    )
    add_faults(
        sim,
        [
            {"service": "openai", "path": "batch_a", "status": 429, "body": body},
            {
                "service": "openai",
                "path": "batch_b",
                "status": 502,
                "body": "<html>Bad Gateway</html>",
                "headers": {"x-should-retry": "false"},
            },
        ],
    )
    quota = get_batch(sim, "batch_a")
    gateway = get_batch(sim, "batch_b")
    assert quota.json()["error"]["code"] == "insufficient_quota"
    assert quota.headers["content-type"] == "application/json"
    assert gateway.text == "<html>Bad Gateway</html>"
    assert gateway.headers["content-type"].startswith("text/plain")
    assert gateway.headers["x-should-retry"] == "false"


def test_latency_fault_delays_response(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "openai", "latency": 0.3, "times": 1})
    started = time.monotonic()
    slow = get_batch(sim)
    slow_seconds = time.monotonic() - started
    started = time.monotonic()
    fast = get_batch(sim)
    fast_seconds = time.monotonic() - started
    assert slow.status_code == 200
    assert slow_seconds >= 0.3
    assert fast.status_code == 200
    assert fast_seconds < 0.3


def test_drop_fault_closes_connection(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "openai", "drop": True, "times": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        get_batch(sim)
    assert get_batch(sim).status_code == 200
    statuses = [entry["status"] for entry in sim.requests()]
    assert statuses == [None, 200]


def test_malformed_fault_sends_invalid_json(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "openai", "malformed": True})
    response = get_batch(sim)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_empty_fault_sends_no_body(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "keboola", "empty": True})
    response = httpx.get(f"{sim.url}/search/jobs", headers=KEBOOLA_HEADERS)
    assert response.status_code == 200
    assert response.content == b""


def test_wrong_shape_fault_sends_other_json(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(
        sim,
        [
            {"service": "openai", "path": "batch_a", "wrong_shape": True},
            {"service": "openai", "path": "batch_b", "wrong_shape": {"id": 7}},
            {"service": "keboola", "path": "^/search/jobs$", "wrong_shape": True},
        ],
    )
    batch = get_batch(sim, "batch_a").json()
    custom = get_batch(sim, "batch_b").json()
    search = httpx.get(f"{sim.url}/search/jobs", headers=KEBOOLA_HEADERS).json()
    assert isinstance(batch, list)
    assert custom == {"id": 7}
    assert isinstance(search, dict)


def test_status_value_fault_reports_unknown_status(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "openai", "status_value": "Paused", "times": 2})
    retrieved = get_batch(sim).json()
    listed = httpx.get(f"{sim.url}/v1/batches", headers=OPENAI_HEADERS).json()
    normal = get_batch(sim).json()
    assert retrieved["status"] == "Paused"
    assert {batch["status"] for batch in listed["data"]} == {"Paused"}
    assert normal["status"] == "validating"
    Batch.model_validate(normal)


def test_status_value_fault_keeps_errors(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "openai", "status_value": "Paused"})
    response = get_batch(sim, "batch_missing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "batch_not_found"


def test_after_commit_drop_creates_job(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "keboola", "after_commit": {"drop": True}, "times": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        create_job(sim)
    jobs = sim.keboola_jobs()
    assert len(jobs) == 1
    assert jobs[0]["body"] == JOB_BODY


def test_after_commit_status_creates_job(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "keboola", "after_commit": {"status": 500}})
    response = create_job(sim)
    assert response.status_code == 500
    assert response.json()["exceptionId"].startswith("exc-")
    assert len(sim.keboola_jobs()) == 1


def test_after_commit_latency_times_out(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "keboola", "after_commit": {"latency": 2}})
    with pytest.raises(httpx.ReadTimeout):
        create_job(sim, timeout=0.3)
    jobs = sim.keboola_jobs()
    assert len(jobs) == 1
    assert jobs[0]["job"]["status"] == "created"


def test_after_commit_ignores_other_requests(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "keboola", "after_commit": {"status": 500}})
    search = httpx.get(f"{sim.url}/search/jobs", headers=KEBOOLA_HEADERS)
    rejected = httpx.post(
        f"{sim.url}/jobs", json={"component": COMPONENT}, headers=KEBOOLA_HEADERS
    )
    assert search.status_code == 200
    assert rejected.status_code == 400
    assert sim.keboola_jobs() == []


def test_first_matching_rule_applies(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(
        sim,
        [
            {"service": "openai", "method": "POST", "status": 418},
            {"service": "openai", "path": "batch_b$", "status": 503, "times": 1},
            {"service": "openai", "path": "^/v1/batches/", "status": 500, "times": 2},
        ],
    )
    statuses = [
        get_batch(sim, batch_id).status_code
        for batch_id in ("batch_b", "batch_b", "batch_a", "batch_b")
    ]
    assert statuses == [503, 500, 500, 200]
    applied = [rule["applied"] for rule in httpx.get(f"{sim.url}/_sim/faults").json()]
    assert applied == [0, 1, 2]


def test_scenario_faults_apply_from_start(simulator: StartSimulator) -> None:
    sim = simulator(
        make_scenario(faults=[{"service": "keboola", "status": 503, "times": 1}])
    )
    assert create_job(sim).status_code == 503
    assert create_job(sim).status_code == 201


def test_faults_skip_control_api(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(
        sim, [{"service": "openai", "drop": True}, {"service": "keboola", "drop": True}]
    )
    response = httpx.get(f"{sim.url}/_sim/requests")
    assert response.status_code == 200
    assert response.json() == []


def test_openai_sdk_retries_server_error(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    # retry-after-ms keeps the SDK's wait before its retry short.
    sim.add_faults(
        {
            "service": "openai",
            "status": 500,
            "times": 1,
            "headers": {"retry-after-ms": "10"},
        }
    )
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{sim.url}/v1", max_retries=1)
    batch = client.batches.retrieve("batch_a")
    entries = sim.requests()
    assert batch.status == "validating"
    assert [entry["status"] for entry in entries] == [500, 200]
    assert [entry["retry_count"] for entry in entries] == [0, 1]


# Control API


def test_request_log_records_requests(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "keboola", "path": "search", "latency": 0.01})
    get_batch(sim)
    httpx.get(
        f"{sim.url}/search/jobs",
        params={"configId": "12345", "limit": "5"},
        headers=KEBOOLA_HEADERS,
    )
    entries = httpx.get(f"{sim.url}/_sim/requests").json()
    assert [entry["service"] for entry in entries] == ["openai", "keboola"]
    assert entries[0]["method"] == "GET"
    assert entries[0]["path"] == "/v1/batches/batch_a"
    assert entries[0]["fault"] is None
    assert entries[0]["status"] == 200
    assert entries[1]["query"] == {"configId": ["12345"], "limit": ["5"]}
    assert entries[1]["fault"]["latency"] == 0.01
    assert entries[0]["time"] <= entries[1]["time"]


def test_request_log_omits_credentials(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    get_batch(sim)
    httpx.get(
        f"{sim.url}/v1/batches/batch_a", headers={"Authorization": "Bearer sk-leak"}
    )
    create_job(sim)
    text = httpx.get(f"{sim.url}/_sim/requests").text
    assert OPENAI_KEY not in text
    assert "sk-leak" not in text
    assert KEBOOLA_TOKEN not in text
    assert len(json.loads(text)) == 3


def test_control_faults_add_list_delete(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    added = add_faults(sim, {"service": "openai", "status": 500})
    added_again = add_faults(sim, [{"service": "keboola", "drop": True}])
    deleted = httpx.delete(f"{sim.url}/_sim/faults")
    assert added.status_code == 200
    assert [rule["rule"]["service"] for rule in added_again.json()] == [
        "openai",
        "keboola",
    ]
    assert deleted.json() == []
    assert get_batch(sim).status_code == 200


def test_control_rejects_invalid_rule(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    invalid = add_faults(sim, {"service": "openai", "status": 500, "drop": True})
    unknown_service = add_faults(sim, {"service": "storage", "drop": True})
    not_json = httpx.post(f"{sim.url}/_sim/faults", content=b"{")
    assert invalid.status_code == 400
    assert "exactly one effect" in invalid.json()["error"]
    assert unknown_service.status_code == 400
    assert not_json.status_code == 400
    assert httpx.get(f"{sim.url}/_sim/faults").json() == []


def test_control_adds_and_replaces_batches(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    get_batch(sim, "batch_a")
    response = httpx.post(
        f"{sim.url}/_sim/batches",
        json={
            "batch_new": {"preset": "fails", "step_seconds": 0},
            "batch_a": {"script": [{"status": "cancelled"}]},
        },
    )
    new = get_batch(sim, "batch_new").json()
    replaced = get_batch(sim, "batch_a").json()
    invalid = httpx.post(
        f"{sim.url}/_sim/batches", json={"batch_x": {"preset": "nope"}}
    )
    assert response.status_code == 200
    assert response.json()["batches"] == ["batch_a", "batch_b", "batch_new"]
    assert new["status"] == "failed"
    assert replaced["status"] == "cancelled"
    assert invalid.status_code == 400
    assert "unknown preset" in invalid.json()["error"]


def test_control_lists_keboola_jobs(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    raw = b'{"component": "kds-team.app-custom-python",  "config": "12345"}'
    created = httpx.post(
        f"{sim.url}/jobs",
        content=raw,
        headers={**KEBOOLA_HEADERS, "Content-Type": "application/json"},
    ).json()
    jobs = httpx.get(f"{sim.url}/_sim/keboola/jobs").json()
    assert len(jobs) == 1
    assert jobs[0]["id"] == created["id"]
    assert jobs[0]["raw_body"] == raw.decode()
    assert jobs[0]["body"] == json.loads(raw)
    assert jobs[0]["job"]["status"] == "created"
    assert jobs[0]["outcome"]["status"] == "success"


def test_control_reset_clears_log_and_faults(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    add_faults(sim, {"service": "openai", "status": 500})
    get_batch(sim)
    create_job(sim)
    reset = httpx.post(f"{sim.url}/_sim/reset")
    assert reset.status_code == 200
    assert httpx.get(f"{sim.url}/_sim/requests").json() == []
    assert httpx.get(f"{sim.url}/_sim/faults").json() == []
    assert get_batch(sim).status_code == 200
    # Created jobs survive a reset.
    assert len(sim.keboola_jobs()) == 1


def test_unknown_control_route_returns_404(simulator: StartSimulator) -> None:
    sim = simulator(make_scenario())
    response = httpx.get(f"{sim.url}/_sim/nothing")
    assert response.status_code == 404
    assert "No control route" in response.json()["error"]
