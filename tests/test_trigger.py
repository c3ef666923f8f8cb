"""The exactly-once trigger protocol, against respx-mocked Keboola responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import respx
import stamina

from reconciler.http_pool import HttpPool
from reconciler.keboola_api import KeboolaClient
from reconciler.retrying import RetryPolicy
from reconciler.settings import Settings
from reconciler.store import BatchRow, Store
from reconciler.timeutil import to_iso, utc_now
from reconciler.trigger import (
    TRIGGER_ID,
    Target,
    TriggerProtocol,
    build_variables,
    encode_ids,
)

QUEUE = "https://queue.keboola.test"
TARGET = Target(QUEUE, "kds-team.app-custom-python", "12345")


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    stamina.set_testing(True, attempts=1)
    yield
    stamina.set_testing(False)


def _batch(batch_id: str, status: str, position: int = 0) -> BatchRow:
    return BatchRow(
        job="j",
        batch_id=batch_id,
        position=position,
        status=status,
        request_counts={"total": 10, "completed": 9, "failed": 1},
        output_file_id=f"file-out-{batch_id}",
        error_file_id=None,
        terminal_at="2026-01-01T00:00:00Z",
        error=None,
        polled_at=None,
    )


BATCHES = [
    _batch("batch_a", "completed", 0),
    _batch("batch_b", "expired", 1),
    _batch("batch_c", "completed", 2),
    _batch("batch_d", "cancelled", 3),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store.open(tmp_path / "state")
    db.insert_job("j", path="jobs.d/j.yaml", revision="r1", spec=None, status="active")
    db.set_batch_ids("j", [b.batch_id for b in BATCHES])
    yield db
    db.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", trigger_lookup_grace=60.0)


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[KeboolaClient]:
    async with HttpPool(settings) as pool:
        yield KeboolaClient(
            pool, queue_url=QUEUE, token="123-456-secrettoken", policy=RetryPolicy()
        )


def _job(
    job_id: str, variables: dict[str, str] | None, status: str = "created"
) -> dict[str, object]:
    body: dict[str, object] = {
        "id": job_id,
        "status": status,
        "isFinished": status in ("success", "error"),
        "result": [],
        "createdTime": "2026-01-01T00:00:00+00:00",
    }
    if variables is not None:
        body["variableValuesData"] = {
            "values": [{"name": k, "value": v} for k, v in variables.items()]
        }
    return body


def test_encode_ids_matches_original() -> None:
    assert encode_ids(["batch_a", "batch_b"]) == '["batch_a", "batch_b"]'
    assert encode_ids([]) == "[]"


def test_variables_five_then_extras() -> None:
    variables = build_variables("j", "tct-1", BATCHES)
    names = [name for name, _ in variables]
    values = dict(variables)
    assert names[:5] == [
        "batch_ids_completed",
        "batch_ids_failed",
        "batch_count_total",
        "batch_count_completed",
        "batch_count_failed",
    ]
    assert values["batch_ids_completed"] == '["batch_a", "batch_c"]'
    assert values["batch_ids_failed"] == '["batch_b", "batch_d"]'
    assert values["batch_count_total"] == "4"
    assert values["batch_count_completed"] == "2"
    assert values["batch_count_failed"] == "2"
    assert values[TRIGGER_ID] == "tct-1"
    assert values["teckochecker_job"] == "j"
    details = json.loads(values["teckochecker_batches"])
    assert details[1] == {
        "id": "batch_b",
        "status": "expired",
        "output_file_id": "file-out-batch_b",
        "error_file_id": None,
        "request_counts": {"total": 10, "completed": 9, "failed": 1},
    }
    assert all(value for _, value in variables)


@respx.mock
async def test_accepted_records_job_id(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    post = respx.post(f"{QUEUE}/jobs").mock(
        return_value=httpx.Response(201, json=_job("900", None))
    )
    outcome = await TriggerProtocol(store, settings).advance(
        "j", BATCHES, TARGET, queue
    )
    row = store.job("j")
    assert row is not None and row.trigger_id is not None
    trigger = store.trigger(row.trigger_id)
    assert trigger is not None
    assert trigger.state == "accepted"
    assert trigger.keboola_job_id == "900"
    assert outcome.error is None
    body = json.loads(post.calls.last.request.content)
    assert list(body) == ["mode", "component", "config", "variableValuesData"]
    assert "configData" not in body
    sent = {v["name"]: v["value"] for v in body["variableValuesData"]["values"]}
    assert sent[TRIGGER_ID] == trigger.id


@respx.mock
async def test_rejected_is_not_retried(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    post = respx.post(f"{QUEUE}/jobs").mock(
        return_value=httpx.Response(
            400,
            json={"error": "Configuration 12345 is disabled.", "exceptionId": "exc-1"},
        )
    )
    protocol = TriggerProtocol(store, settings)
    outcome = await protocol.advance("j", BATCHES, TARGET, queue)
    await protocol.advance("j", BATCHES, TARGET, queue)
    row = store.job("j")
    assert row is not None and row.trigger_id is not None
    trigger = store.trigger(row.trigger_id)
    assert trigger is not None
    assert trigger.state == "rejected"
    assert outcome.error is not None and "disabled" in outcome.error
    assert post.call_count == 1


@respx.mock
async def test_rate_limit_releases_claim(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    post = respx.post(f"{QUEUE}/jobs").mock(
        return_value=httpx.Response(
            429, headers={"Retry-After": "120"}, json={"error": "slow down"}
        )
    )
    protocol = TriggerProtocol(store, settings)
    await protocol.advance("j", BATCHES, TARGET, queue)
    await protocol.advance("j", BATCHES, TARGET, queue)
    row = store.job("j")
    assert row is not None
    assert row.trigger_id is None
    assert row.trigger_not_before is not None
    assert post.call_count == 1


@respx.mock
async def test_unknown_outcome_found_by_search(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    post = respx.post(f"{QUEUE}/jobs").mock(return_value=httpx.Response(503))
    protocol = TriggerProtocol(store, settings)
    first = await protocol.advance("j", BATCHES, TARGET, queue)
    row = store.job("j")
    assert row is not None and row.trigger_id is not None
    assert first.error is not None and "unknown" in first.error

    respx.get(f"{QUEUE}/search/jobs").mock(
        return_value=httpx.Response(
            200,
            json=[
                _job("800", {TRIGGER_ID: "other"}),
                _job("801", {TRIGGER_ID: row.trigger_id}),
            ],
        )
    )
    await protocol.advance("j", BATCHES, TARGET, queue)
    trigger = store.trigger(row.trigger_id)
    assert trigger is not None
    assert trigger.state == "accepted"
    assert trigger.keboola_job_id == "801"
    assert post.call_count == 1


@respx.mock
async def test_empty_search_waits_for_grace(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    post = respx.post(f"{QUEUE}/jobs").mock(side_effect=httpx.ReadTimeout("timed out"))
    respx.get(f"{QUEUE}/search/jobs").mock(return_value=httpx.Response(200, json=[]))
    protocol = TriggerProtocol(store, settings)
    await protocol.advance("j", BATCHES, TARGET, queue)
    outcome = await protocol.advance("j", BATCHES, TARGET, queue)
    row = store.job("j")
    assert row is not None and row.trigger_id is not None
    trigger = store.trigger(row.trigger_id)
    assert trigger is not None
    assert trigger.state == "unknown"
    assert outcome.error is not None and "searching again" in outcome.error
    assert post.call_count == 1


@respx.mock
async def test_resend_after_grace_keeps_id(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    post = respx.post(f"{QUEUE}/jobs").mock(
        side_effect=[
            httpx.RemoteProtocolError("Server disconnected"),
            httpx.Response(201, json=_job("42", None)),
        ]
    )
    respx.get(f"{QUEUE}/search/jobs").mock(return_value=httpx.Response(200, json=[]))
    protocol = TriggerProtocol(store, settings.with_overrides(trigger_lookup_grace=0.0))
    await protocol.advance("j", BATCHES, TARGET, queue)
    await protocol.advance("j", BATCHES, TARGET, queue)
    row = store.job("j")
    assert row is not None and row.trigger_id is not None
    trigger = store.trigger(row.trigger_id)
    assert trigger is not None
    assert trigger.state == "accepted"
    assert trigger.attempts == 2
    assert post.call_count == 2
    ids = [
        {
            v["name"]: v["value"]
            for v in json.loads(c.request.content)["variableValuesData"]["values"]
        }[TRIGGER_ID]
        for c in post.calls
    ]
    assert ids == [trigger.id, trigger.id]


@respx.mock
async def test_failing_search_sends_nothing(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    post = respx.post(f"{QUEUE}/jobs").mock(return_value=httpx.Response(502))
    respx.get(f"{QUEUE}/search/jobs").mock(return_value=httpx.Response(500))
    protocol = TriggerProtocol(store, settings.with_overrides(trigger_lookup_grace=0.0))
    await protocol.advance("j", BATCHES, TARGET, queue)
    outcome = await protocol.advance("j", BATCHES, TARGET, queue)
    assert outcome.error is not None and "nothing is sent" in outcome.error
    assert post.call_count == 1


@respx.mock
async def test_search_without_variables_reads_job(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    respx.post(f"{QUEUE}/jobs").mock(side_effect=httpx.ReadTimeout("timed out"))
    protocol = TriggerProtocol(store, settings)
    await protocol.advance("j", BATCHES, TARGET, queue)
    row = store.job("j")
    assert row is not None and row.trigger_id is not None
    respx.get(f"{QUEUE}/search/jobs").mock(
        return_value=httpx.Response(200, json=[_job("77", None)])
    )
    read = respx.get(f"{QUEUE}/jobs/77").mock(
        return_value=httpx.Response(200, json=_job("77", {TRIGGER_ID: row.trigger_id}))
    )
    await protocol.advance("j", BATCHES, TARGET, queue)
    trigger = store.trigger(row.trigger_id)
    assert trigger is not None
    assert trigger.state == "accepted"
    assert read.call_count == 1


@respx.mock
async def test_expired_lease_becomes_unknown(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    past = to_iso(utc_now() - timedelta(minutes=5))
    store.claim_trigger(
        "j",
        {
            "id": "tct-crashed",
            "batch_ids": [b.batch_id for b in BATCHES],
            "target": TARGET.as_dict(),
            "state": "sending",
            "claimed_at": past,
            "sent_at": past,
            "lease_until": past,
            "attempts": 1,
            "parameters": dict(build_variables("j", "tct-crashed", BATCHES)),
        },
    )
    post = respx.post(f"{QUEUE}/jobs").mock(
        return_value=httpx.Response(201, json=_job("5", None))
    )
    respx.get(f"{QUEUE}/search/jobs").mock(
        return_value=httpx.Response(200, json=[_job("5", {TRIGGER_ID: "tct-crashed"})])
    )
    await TriggerProtocol(store, settings).advance("j", BATCHES, TARGET, queue)
    trigger = store.trigger("tct-crashed")
    assert trigger is not None
    assert trigger.state == "accepted"
    assert trigger.keboola_job_id == "5"
    assert post.call_count == 0


@respx.mock
async def test_active_lease_is_left_alone(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    now = utc_now()
    store.claim_trigger(
        "j",
        {
            "id": "tct-busy",
            "batch_ids": ["batch_a"],
            "target": TARGET.as_dict(),
            "state": "sending",
            "claimed_at": to_iso(now),
            "sent_at": to_iso(now),
            "lease_until": to_iso(now + timedelta(minutes=1)),
            "attempts": 1,
            "parameters": {},
        },
    )
    post = respx.post(f"{QUEUE}/jobs")
    search = respx.get(f"{QUEUE}/search/jobs")
    await TriggerProtocol(store, settings).advance("j", BATCHES, TARGET, queue)
    trigger = store.trigger("tct-busy")
    assert trigger is not None
    assert trigger.state == "sending"
    assert post.call_count == 0
    assert search.call_count == 0


@respx.mock
async def test_concurrent_claims_send_once(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    post = respx.post(f"{QUEUE}/jobs").mock(
        return_value=httpx.Response(201, json=_job("1", None))
    )
    respx.get(f"{QUEUE}/jobs/1").mock(
        return_value=httpx.Response(200, json=_job("1", None))
    )
    other = Store.open(settings.state_dir)
    try:
        await asyncio.gather(
            TriggerProtocol(store, settings).advance("j", BATCHES, TARGET, queue),
            TriggerProtocol(other, settings).advance("j", BATCHES, TARGET, queue),
        )
    finally:
        other.close()
    assert post.call_count == 1


@respx.mock
async def test_follow_records_final_status(
    store: Store, settings: Settings, queue: KeboolaClient
) -> None:
    respx.post(f"{QUEUE}/jobs").mock(
        return_value=httpx.Response(201, json=_job("9", None))
    )
    protocol = TriggerProtocol(store, settings)
    await protocol.advance("j", BATCHES, TARGET, queue)
    finished = _job("9", None, status="error")
    finished["result"] = {"message": 'No value provided for variable "x".'}
    respx.get(f"{QUEUE}/jobs/9").mock(return_value=httpx.Response(200, json=finished))
    await protocol.advance("j", BATCHES, TARGET, queue)
    row = store.job("j")
    assert row is not None and row.trigger_id is not None
    trigger = store.trigger(row.trigger_id)
    assert trigger is not None
    assert trigger.keboola_status == "error"
    assert trigger.keboola_finished is True
    assert trigger.keboola_message == 'No value provided for variable "x".'
