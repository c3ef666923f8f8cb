"""Tests of the Keboola Job Queue API client, through respx."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import respx

from reconciler.errors import (
    ApiError,
    AuthError,
    NotFoundError,
    OutcomeUnknownError,
    PermanentApiError,
    TransientApiError,
)
from reconciler.http_pool import HttpPool
from reconciler.keboola_api import KeboolaClient, KeboolaJob, parse_job
from reconciler.openai_api import OpenAIClient
from reconciler.retrying import RetryPolicy
from reconciler.settings import Settings

QUEUE = "https://queue.eu-central-1.keboola.com"
TOKEN_SECRET = "Xy9TokenSecretPartAbcdef0123456789"
TOKEN = f"7150-199182-{TOKEN_SECRET}"
COMPONENT = "kds-team.app-custom-python"
CONFIG = "01k88kpabsjpv5qqxcn0dg69pm"
FAST = RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.002, wait_jitter=0.0)
VARIABLES = [
    ("batch_ids_completed", '["batch_a", "batch_b"]'),
    ("batch_ids_failed", '["batch_c"]'),
    ("batch_count_total", "3"),
    ("batch_count_completed", "2"),
    ("batch_count_failed", "1"),
]


def job_json(**changes: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": "807932655",
        "runId": "807932655",
        "status": "created",
        "desiredStatus": "processing",
        "mode": "run",
        "component": COMPONENT,
        "config": CONFIG,
        "configData": [],
        "createdTime": "2025-10-24T10:54:08+00:00",
        "result": [],
        "isFinished": False,
        "url": f"{QUEUE}/jobs/807932655",
        "variableValuesData": {
            "values": [{"name": name, "value": value} for name, value in VARIABLES]
        },
        "backend": [],
        "metrics": [],
    }
    job.update(changes)
    return job


def error_json(message: str, code: Any = 400) -> dict[str, Any]:
    return {
        "error": message,
        "code": code,
        "exceptionId": "exception-7f3a",
        "status": "error",
        "context": {"internal": "context-detail"},
    }


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    async with HttpPool(Settings(http_timeout=5.0)) as shared_pool:
        yield shared_pool


@pytest.fixture
def client(pool: HttpPool) -> KeboolaClient:
    return KeboolaClient(pool, queue_url=QUEUE, token=TOKEN, policy=FAST)


async def create(client: KeboolaClient) -> KeboolaJob:
    return await client.create_job(
        component_id=COMPONENT, configuration_id=CONFIG, variables=VARIABLES
    )


# create_job


async def test_create_sends_exact_body(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(f"{QUEUE}/jobs").respond(201, json=job_json())

    await create(client)

    request = route.calls.last.request
    body = json.loads(request.content)
    assert list(body) == ["mode", "component", "config", "variableValuesData"]
    assert body["mode"] == "run"
    assert body["component"] == COMPONENT
    assert body["config"] == CONFIG
    assert body["variableValuesData"] == {
        "values": [{"name": n, "value": v} for n, v in VARIABLES]
    }
    assert list(body["variableValuesData"]["values"][0]) == ["name", "value"]
    assert b"configData" not in request.content
    assert request.headers["x-storageapi-token"] == TOKEN
    assert request.headers["content-type"] == "application/json"


async def test_create_returns_job(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(f"{QUEUE}/jobs").respond(201, json=job_json())

    job = await create(client)

    assert job.id == "807932655"
    assert job.status == "created"
    assert job.is_finished is False
    assert job.message is None
    assert job.created_time == "2025-10-24T10:54:08+00:00"
    assert job.url == f"{QUEUE}/jobs/807932655"
    assert job.variables == dict(VARIABLES)


async def test_create_accepts_200(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(f"{QUEUE}/jobs").respond(200, json=job_json(id=807932655))

    job = await create(client)

    assert job.id == "807932655"


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(httpx.ReadTimeout("read timed out"), id="read-timeout"),
        pytest.param(httpx.WriteTimeout("write timed out"), id="write-timeout"),
        pytest.param(httpx.RemoteProtocolError("disconnected"), id="dropped"),
        pytest.param(httpx.ReadError("connection reset"), id="reset"),
    ],
)
async def test_create_transport_error_outcome_unknown(
    client: KeboolaClient, respx_mock: respx.MockRouter, error: Exception
) -> None:
    route = respx_mock.post(f"{QUEUE}/jobs").mock(side_effect=error)

    with pytest.raises(OutcomeUnknownError) as caught:
        await create(client)

    assert route.call_count == 1
    assert str(caught.value).endswith("the job may exist")
    assert caught.value.status_code is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_create_5xx_outcome_unknown(
    client: KeboolaClient, respx_mock: respx.MockRouter, status: int
) -> None:
    route = respx_mock.post(f"{QUEUE}/jobs").respond(
        status, json=error_json("Internal Server Error occurred.", status)
    )

    with pytest.raises(OutcomeUnknownError) as caught:
        await create(client)

    assert route.call_count == 1
    assert caught.value.status_code == status
    assert caught.value.reference == "exception-7f3a"


async def test_create_total_timeout_outcome_unknown(
    respx_mock: respx.MockRouter,
) -> None:
    started: list[httpx.Request] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        # respx records a call only when its side effect returns, so count here.
        started.append(request)
        await asyncio.sleep(1.0)
        return httpx.Response(201, json=job_json())

    respx_mock.post(f"{QUEUE}/jobs").mock(side_effect=slow)

    async with HttpPool(Settings(http_timeout=0.1)) as pool:
        client = KeboolaClient(pool, queue_url=QUEUE, token=TOKEN, policy=FAST)
        with pytest.raises(OutcomeUnknownError) as caught:
            await create(client)

    assert len(started) == 1
    assert "timed out after 0.1 s" in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(httpx.ConnectError("connection refused"), id="connect"),
        pytest.param(httpx.ConnectTimeout("connect timed out"), id="connect-timeout"),
    ],
)
async def test_create_unsent_request_is_transient(
    client: KeboolaClient, respx_mock: respx.MockRouter, error: Exception
) -> None:
    route = respx_mock.post(f"{QUEUE}/jobs").mock(side_effect=error)

    with pytest.raises(TransientApiError) as caught:
        await create(client)

    assert route.call_count == 1
    assert not isinstance(caught.value, OutcomeUnknownError)


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(201, text="<html>created</html>"), id="not-json"),
        pytest.param(httpx.Response(201, json=[]), id="empty-array"),
        pytest.param(httpx.Response(201, json={"status": "created"}), id="no-id"),
        pytest.param(httpx.Response(201, json={"id": "1"}), id="no-status"),
        pytest.param(httpx.Response(204), id="no-content"),
    ],
)
async def test_create_bad_success_body_outcome_unknown(
    client: KeboolaClient, respx_mock: respx.MockRouter, response: httpx.Response
) -> None:
    route = respx_mock.post(f"{QUEUE}/jobs").mock(return_value=response)

    with pytest.raises(OutcomeUnknownError) as caught:
        await create(client)

    assert route.call_count == 1
    assert "without a job" in str(caught.value)


async def test_create_429_not_created(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(f"{QUEUE}/jobs").respond(
        429, headers={"retry-after": "2.5"}
    )

    with pytest.raises(TransientApiError) as caught:
        await create(client)

    assert route.call_count == 1
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert caught.value.retry_after == 2.5
    assert caught.value.status_code == 429


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        pytest.param(400, PermanentApiError, id="400"),
        pytest.param(401, AuthError, id="401"),
        pytest.param(403, AuthError, id="403"),
        pytest.param(404, NotFoundError, id="404"),
        pytest.param(408, PermanentApiError, id="408"),
        pytest.param(409, PermanentApiError, id="409"),
        pytest.param(422, PermanentApiError, id="422"),
        pytest.param(302, PermanentApiError, id="redirect"),
    ],
)
async def test_create_status_code_mapping(
    client: KeboolaClient,
    respx_mock: respx.MockRouter,
    status: int,
    error_class: type[ApiError],
) -> None:
    route = respx_mock.post(f"{QUEUE}/jobs").respond(
        status, json=error_json("rejected", status)
    )

    with pytest.raises(ApiError) as caught:
        await create(client)

    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert caught.value.service == "keboola"
    assert route.call_count == 1


async def test_create_400_message_and_reference(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    message = f'Configuration "{CONFIG}" of component "{COMPONENT}" is disabled.'
    respx_mock.post(f"{QUEUE}/jobs").respond(400, json=error_json(message, 400))

    with pytest.raises(PermanentApiError) as caught:
        await create(client)

    assert str(caught.value) == (
        f"Keboola POST /jobs failed: 400 {message} "
        "(code 400, exception id exception-7f3a)"
    )
    assert caught.value.reference == "exception-7f3a"
    assert caught.value.code == "400"
    assert "context-detail" not in str(caught.value)


async def test_queue_url_path_kept(
    pool: HttpPool, respx_mock: respx.MockRouter
) -> None:
    client = KeboolaClient(
        pool, queue_url="http://127.0.0.1:8123/queue/", token=TOKEN, policy=FAST
    )
    route = respx_mock.post("http://127.0.0.1:8123/queue/jobs").respond(
        201, json=job_json()
    )

    await create(client)

    assert route.call_count == 1


# get_job


async def test_get_job_parses_finished_job(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    body = job_json(
        id=807932655,
        status="error",
        isFinished=True,
        result={"message": 'No value provided for variable "x".'},
    )
    route = respx_mock.get(f"{QUEUE}/jobs/807932655").respond(200, json=body)

    job = await client.get_job("807932655")

    assert job.id == "807932655"
    assert job.status == "error"
    assert job.is_finished is True
    assert job.message == 'No value provided for variable "x".'
    assert route.calls.last.request.headers["x-storageapi-token"] == TOKEN


@pytest.mark.parametrize(
    ("status", "is_finished", "expected"),
    [
        pytest.param("warning", None, True, id="warning-derived"),
        pytest.param("terminated", None, True, id="terminated-derived"),
        pytest.param("processing", None, False, id="processing-derived"),
        pytest.param("terminating", None, False, id="terminating-derived"),
        pytest.param("success", False, False, id="flag-wins-false"),
        pytest.param("processing", True, True, id="flag-wins-true"),
    ],
)
def test_is_finished_flag_or_status(
    status: str, is_finished: bool | None, expected: bool
) -> None:
    body = job_json(status=status)
    del body["isFinished"]
    if is_finished is not None:
        body["isFinished"] = is_finished

    assert parse_job(body).is_finished is expected


@pytest.mark.parametrize(
    ("variable_values", "expected"),
    [
        pytest.param(
            {"values": [{"name": "a", "value": "1"}, {"name": "b", "value": "x"}]},
            {"a": "1", "b": "x"},
            id="values",
        ),
        pytest.param({"values": []}, {}, id="no-values"),
        pytest.param([], {}, id="php-empty-object"),
        pytest.param({"values": [{"name": "n", "value": 3}]}, {"n": "3"}, id="number"),
        pytest.param(
            {"values": [{"value": "orphan"}, "junk", {"name": "ok", "value": "1"}]},
            {"ok": "1"},
            id="malformed-items-skipped",
        ),
        pytest.param(None, None, id="null"),
    ],
)
def test_variables_parsed(
    variable_values: Any, expected: dict[str, str] | None
) -> None:
    job = parse_job(job_json(variableValuesData=variable_values))

    assert job.variables == expected


def test_variables_missing_key_is_none() -> None:
    body = job_json()
    del body["variableValuesData"]

    assert parse_job(body).variables is None


def test_result_message_parsed() -> None:
    assert parse_job(job_json(result=[])).message is None
    assert parse_job(job_json(result={"message": "done"})).message == "done"
    assert parse_job(job_json(result={"message": None})).message is None


@pytest.mark.parametrize(
    ("status", "error_class", "calls"),
    [
        pytest.param(400, PermanentApiError, 1, id="400"),
        pytest.param(401, AuthError, 1, id="401"),
        pytest.param(403, AuthError, 1, id="403"),
        pytest.param(404, NotFoundError, 1, id="404"),
        pytest.param(408, TransientApiError, 3, id="408"),
        pytest.param(409, TransientApiError, 3, id="409"),
        pytest.param(429, TransientApiError, 3, id="429"),
        pytest.param(500, TransientApiError, 3, id="500"),
        pytest.param(503, TransientApiError, 3, id="503"),
    ],
)
async def test_get_job_status_code_mapping(
    client: KeboolaClient,
    respx_mock: respx.MockRouter,
    status: int,
    error_class: type[ApiError],
    calls: int,
) -> None:
    route = respx_mock.get(f"{QUEUE}/jobs/42").respond(
        status, json=error_json("failed", status)
    )

    with pytest.raises(ApiError) as caught:
        await client.get_job("42")

    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert route.call_count == calls


async def test_get_job_not_found_message(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{QUEUE}/jobs/42").respond(
        404, json=error_json('Job "42" not found', 404)
    )

    with pytest.raises(NotFoundError) as caught:
        await client.get_job("42")

    assert str(caught.value) == (
        'Keboola GET /jobs/42 failed: 404 Job "42" not found '
        "(code 404, exception id exception-7f3a)"
    )


async def test_get_job_retries_transport_errors(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{QUEUE}/jobs/42").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            httpx.Response(502),
            httpx.Response(200, json=job_json(id="42", status="success")),
        ]
    )

    job = await client.get_job("42")

    assert job.status == "success"
    assert route.call_count == 3


async def test_get_job_bad_body_transient(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{QUEUE}/jobs/42").respond(200, json=[])

    with pytest.raises(TransientApiError) as caught:
        await client.get_job("42")

    assert route.call_count == 3
    assert "returned an unexpected body" in str(caught.value)


async def test_get_job_empty_id_rejected(client: KeboolaClient) -> None:
    with pytest.raises(ValueError, match="job_id is empty"):
        await client.get_job("")


# search_jobs


def jobs_page(first: int, count: int) -> list[dict[str, Any]]:
    return [job_json(id=str(n)) for n in range(first, first + count)]


async def test_search_pages_until_short_page(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{QUEUE}/search/jobs").mock(
        side_effect=[
            httpx.Response(200, json=jobs_page(1000, 100)),
            httpx.Response(200, json=jobs_page(900, 30)),
        ]
    )
    since = datetime(
        2025, 10, 24, 12, 54, 8, 123456, tzinfo=timezone(timedelta(hours=2))
    )

    jobs = await client.search_jobs(
        component_id=COMPONENT, configuration_id=CONFIG, created_from=since
    )

    assert len(jobs) == 130
    assert jobs[0].id == "1000"
    assert jobs[-1].id == "929"
    assert route.call_count == 2
    first = route.calls[0].request.url.params
    assert first["componentId"] == COMPONENT
    assert first["configId"] == CONFIG
    assert first["createdTimeFrom"] == "2025-10-24T10:54:08+00:00"
    assert first["sortBy"] == "createdTime"
    assert first["sortOrder"] == "desc"
    assert first["limit"] == "100"
    assert first["offset"] == "0"
    assert route.calls[1].request.url.params["offset"] == "100"


async def test_search_empty_result_one_call(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{QUEUE}/search/jobs").respond(200, json=[])

    jobs = await client.search_jobs(
        component_id=COMPONENT, configuration_id=CONFIG, created_from=datetime.now(UTC)
    )

    assert jobs == []
    assert route.call_count == 1


async def test_search_full_last_page_reads_next(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{QUEUE}/search/jobs").mock(
        side_effect=[
            httpx.Response(200, json=jobs_page(0, 100)),
            httpx.Response(200, json=[]),
        ]
    )

    jobs = await client.search_jobs(
        component_id=COMPONENT, configuration_id=CONFIG, created_from=datetime.now(UTC)
    )

    assert len(jobs) == 100
    assert route.call_count == 2


async def test_search_drops_repeated_jobs(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    # A new job shifted the offsets, so job 900 appears on both pages.
    respx_mock.get(f"{QUEUE}/search/jobs").mock(
        side_effect=[
            httpx.Response(200, json=jobs_page(900, 100)),
            httpx.Response(200, json=jobs_page(999, 5)),
        ]
    )

    jobs = await client.search_jobs(
        component_id=COMPONENT, configuration_id=CONFIG, created_from=datetime.now(UTC)
    )

    ids = [job.id for job in jobs]
    assert len(ids) == 104
    assert len(set(ids)) == 104


async def test_search_page_retried(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{QUEUE}/search/jobs").mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(200, json=jobs_page(0, 3)),
        ]
    )

    jobs = await client.search_jobs(
        component_id=COMPONENT, configuration_id=CONFIG, created_from=datetime.now(UTC)
    )

    assert len(jobs) == 3
    assert route.call_count == 2


async def test_search_variables_of_each_job(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    without = job_json(id="2")
    del without["variableValuesData"]
    respx_mock.get(f"{QUEUE}/search/jobs").respond(
        200,
        json=[job_json(id="1"), without, job_json(id="3", variableValuesData=[])],
    )

    jobs = await client.search_jobs(
        component_id=COMPONENT, configuration_id=CONFIG, created_from=datetime.now(UTC)
    )

    assert jobs[0].variables == dict(VARIABLES)
    assert jobs[1].variables is None
    assert jobs[2].variables == {}


async def test_search_object_body_transient(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{QUEUE}/search/jobs").respond(200, json={"jobs": []})

    with pytest.raises(TransientApiError):
        await client.search_jobs(
            component_id=COMPONENT,
            configuration_id=CONFIG,
            created_from=datetime.now(UTC),
        )


async def test_search_naive_datetime_rejected(client: KeboolaClient) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await client.search_jobs(
            component_id=COMPONENT,
            configuration_id=CONFIG,
            created_from=datetime(2025, 10, 24, 10, 54),
        )


# Secrets


async def test_echoed_token_scrubbed_from_401(
    client: KeboolaClient,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    body = error_json(f"Invalid access token {TOKEN}", "storage.tokenInvalid")
    body["exceptionId"] = TOKEN
    respx_mock.post(f"{QUEUE}/jobs").respond(401, json=body)

    with pytest.raises(AuthError) as caught:
        await create(client)

    assert TOKEN not in str(caught.value)
    assert TOKEN_SECRET not in str(caught.value)
    assert "Invalid access token ***" in str(caught.value)
    assert caught.value.reference == "***"
    assert caught.value.code == "storage.tokenInvalid"
    assert TOKEN_SECRET not in caplog.text


async def test_echoed_secret_part_scrubbed(
    client: KeboolaClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(f"{QUEUE}/jobs").respond(
        500, json=error_json(f"token secret {TOKEN_SECRET} rejected", 500)
    )

    with pytest.raises(OutcomeUnknownError) as caught:
        await create(client)

    assert TOKEN_SECRET not in str(caught.value)
    assert "token secret *** rejected" in str(caught.value)


async def test_echoed_token_scrubbed_on_retries(
    client: KeboolaClient,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    respx_mock.get(f"{QUEUE}/jobs/42").mock(
        side_effect=[
            httpx.Response(503, json=error_json(f"down for {TOKEN}", 503)),
            httpx.ReadError(f"reset while sending {TOKEN}"),
            httpx.Response(200, text=f"<html>{TOKEN}</html>"),
        ]
    )

    with pytest.raises(TransientApiError) as caught:
        await client.get_job("42")

    assert TOKEN_SECRET not in str(caught.value)
    assert "failed on attempt 2 of 3" in caplog.text
    assert TOKEN_SECRET not in caplog.text


async def test_client_rejects_empty_token(pool: HttpPool) -> None:
    with pytest.raises(ValueError, match="token is empty"):
        KeboolaClient(pool, queue_url=QUEUE, token="", policy=FAST)


# Shared limiter


async def test_limiter_shared_by_both_apis(respx_mock: respx.MockRouter) -> None:
    in_flight = 0
    max_in_flight = 0

    async def tracked(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        last = request.url.path.rsplit("/", 1)[-1]
        if request.url.host == "api.openai.com":
            return httpx.Response(200, json={"id": last, "status": "in_progress"})

        return httpx.Response(200, json=job_json(id=last))

    openai_route = respx_mock.get(
        url__startswith="https://api.openai.com/v1/batches/"
    ).mock(side_effect=tracked)
    keboola_route = respx_mock.get(url__startswith=f"{QUEUE}/jobs/").mock(
        side_effect=tracked
    )

    async with HttpPool(Settings(concurrency=3)) as pool:
        openai = OpenAIClient(
            pool, base_url="https://api.openai.com/v1", api_key="sk-x", policy=FAST
        )
        keboola = KeboolaClient(pool, queue_url=QUEUE, token=TOKEN, policy=FAST)
        reads: list[Awaitable[object]] = []
        reads += [openai.get_batch(f"batch_{n}") for n in range(10)]
        reads += [keboola.get_job(str(n)) for n in range(10)]
        await asyncio.gather(*reads)

    assert openai_route.call_count == 10
    assert keboola_route.call_count == 10
    assert max_in_flight == 3
