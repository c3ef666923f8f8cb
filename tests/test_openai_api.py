"""Tests of the OpenAI Batch API client and the shared HTTP pool, through respx."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from reconciler import openai_api, statuses
from reconciler.errors import (
    ApiError,
    AuthError,
    NotFoundError,
    PermanentApiError,
    TransientApiError,
)
from reconciler.http_pool import USER_AGENT, HttpPool
from reconciler.openai_api import Batch, OpenAIClient, RequestCounts
from reconciler.retrying import RetryPolicy
from reconciler.settings import Settings

BASE = "https://api.openai.com/v1"
KEY = "sk-proj-Test0123456789abcdefSECRET"
BATCH_ID = "batch_6a8b47c384748190bb22810ba35cb1dc"
BATCH_URL = f"{BASE}/batches/{BATCH_ID}"
FAST = RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.002, wait_jitter=0.0)


def batch_json(**changes: Any) -> dict[str, Any]:
    batch: dict[str, Any] = {
        "id": BATCH_ID,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": "file-abc",
        "completion_window": "24h",
        "status": "completed",
        "output_file_id": "file-out",
        "error_file_id": None,
        "created_at": 1714508499,
        "in_progress_at": 1714508560,
        "expires_at": 1714594899,
        "finalizing_at": 1714508700,
        "completed_at": 1714508750,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 10, "completed": 9, "failed": 1},
        "metadata": None,
    }
    batch.update(changes)
    return batch


def error_json(message: str, code: str | None, error_type: str) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": error_type, "param": None, "code": code}
    }


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    async with HttpPool(Settings(http_timeout=5.0)) as shared_pool:
        yield shared_pool


@pytest.fixture
def client(pool: HttpPool) -> OpenAIClient:
    return OpenAIClient(pool, base_url=BASE, api_key=KEY, policy=FAST)


@pytest.fixture(autouse=True)
def fresh_unknown_statuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_api, "_unknown_statuses_logged", set())


# Parsing


async def test_get_batch_parses_fields(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    errors = {
        "object": "list",
        "data": [{"code": "invalid_json_line", "message": "bad", "line": 3}],
    }
    respx_mock.get(BATCH_URL).respond(200, json=batch_json(errors=errors))

    batch = await client.get_batch(BATCH_ID)

    assert batch.id == BATCH_ID
    assert batch.status == "completed"
    assert batch.terminal is True
    assert batch.terminal_at == 1714508750
    assert batch.request_counts == RequestCounts(total=10, completed=9, failed=1)
    assert batch.output_file_id == "file-out"
    assert batch.error_file_id is None
    assert batch.created_at == 1714508499
    assert batch.in_progress_at == 1714508560
    assert batch.finalizing_at == 1714508700
    assert batch.errors[0].code == "invalid_json_line"
    assert batch.errors[0].message == "bad"
    assert batch.errors[0].line == 3


async def test_empty_file_ids_become_none(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(BATCH_URL).respond(
        200, json=batch_json(output_file_id="", error_file_id="")
    )

    batch = await client.get_batch(BATCH_ID)

    assert batch.output_file_id is None
    assert batch.error_file_id is None


async def test_iso_timestamps_become_unix_seconds(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(BATCH_URL).respond(
        200,
        json=batch_json(
            created_at="2024-07-11T21:41:09.8432669Z",
            in_progress_at="2024-07-11T23:41:09+02:00",
            completed_at="2024-07-11T22:00:00",
            finalizing_at="not a date",
        ),
    )

    batch = await client.get_batch(BATCH_ID)

    expected = int(datetime(2024, 7, 11, 21, 41, 9, tzinfo=UTC).timestamp())
    assert batch.created_at == expected
    assert batch.in_progress_at == expected
    assert batch.completed_at == expected + 18 * 60 + 51
    assert batch.finalizing_at is None


async def test_capitalised_status_lower_cased(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(BATCH_URL).respond(200, json=batch_json(status="Completed"))

    batch = await client.get_batch(BATCH_ID)

    assert batch.status == "completed"
    assert batch.terminal is True


async def test_unknown_status_kept_logged_once(
    client: OpenAIClient,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    respx_mock.get(BATCH_URL).respond(200, json=batch_json(status="Paused"))
    caplog.set_level(logging.WARNING, logger="reconciler.openai_api")

    first = await client.get_batch(BATCH_ID)
    second = await client.get_batch(BATCH_ID)

    assert first.status == "paused"
    assert first.terminal is False
    assert first.terminal_at is None
    assert second.status == "paused"
    warnings = [r for r in caplog.records if "unknown status" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


async def test_null_request_counts_kept(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    counts = {"total": None, "completed": None, "failed": None}
    respx_mock.get(BATCH_URL).respond(200, json=batch_json(request_counts=counts))

    batch = await client.get_batch(BATCH_ID)

    assert batch.request_counts == RequestCounts(None, None, None)


async def test_missing_request_counts_is_none(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(BATCH_URL).respond(200, json=batch_json(request_counts=None))

    batch = await client.get_batch(BATCH_ID)

    assert batch.request_counts is None


@pytest.mark.parametrize(
    ("status", "field", "terminal"),
    [
        ("completed", "completed_at", True),
        ("failed", "failed_at", True),
        ("cancelled", "cancelled_at", True),
        ("expired", "expired_at", True),
        ("cancelling", "cancelling_at", False),
        ("in_progress", "in_progress_at", False),
    ],
)
def test_terminal_at_matches_status(status: str, field: str, terminal: bool) -> None:
    changes: dict[str, Any] = {"completed_at": None, field: 1714509999}
    batch = openai_api.parse_batch(batch_json(status=status, **changes))

    assert batch.terminal is terminal
    assert batch.terminal_at == (1714509999 if terminal else None)


def test_failed_statuses_are_terminal() -> None:
    assert statuses.FAILED_STATUSES < statuses.TERMINAL_STATUSES
    assert "completed" not in statuses.FAILED_STATUSES


# Requests


async def test_bearer_header_on_openai(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(BATCH_URL).respond(200, json=batch_json())

    await client.get_batch(BATCH_ID)

    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "api-key" not in request.headers
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("teckochecker/")


@pytest.mark.parametrize(
    "host", ["myres.openai.azure.com", "myres.cognitiveservices.azure.com"]
)
async def test_azure_uses_api_key_header(
    pool: HttpPool, respx_mock: respx.MockRouter, host: str
) -> None:
    base = f"https://{host}/openai/?api-version=2024-10-21"
    client = OpenAIClient(pool, base_url=base, api_key=KEY, policy=FAST)
    route = respx_mock.get(
        f"https://{host}/openai/batches/{BATCH_ID}",
        params={"api-version": "2024-10-21"},
    ).respond(200, json=batch_json())

    await client.get_batch(BATCH_ID)

    request = route.calls.last.request
    assert request.headers["api-key"] == KEY
    assert "authorization" not in request.headers
    assert request.url.query == b"api-version=2024-10-21"


async def test_batch_id_is_path_encoded(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{BASE}/batches/batch_a%2F..%3Fx").respond(
        200, json=batch_json(id="batch_a/..?x")
    )

    batch = await client.get_batch("batch_a/..?x")

    assert batch.id == "batch_a/..?x"
    assert route.call_count == 1


async def test_empty_batch_id_rejected(client: OpenAIClient) -> None:
    with pytest.raises(ValueError, match="batch_id is empty"):
        await client.get_batch("")


async def test_list_batches_page(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    page = {
        "object": "list",
        "data": [batch_json(id="batch_b"), batch_json(id="batch_a")],
        "first_id": "batch_b",
        "last_id": "batch_a",
        "has_more": True,
    }
    route = respx_mock.get(
        f"{BASE}/batches", params={"limit": "2", "after": "batch_c"}
    ).respond(200, json=page)

    batches, has_more = await client.list_batches(limit=2, after="batch_c")

    assert [b.id for b in batches] == ["batch_b", "batch_a"]
    assert has_more is True
    assert route.call_count == 1


async def test_list_batches_empty_last_page(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/batches").respond(
        200, json={"object": "list", "data": [], "has_more": False}
    )

    batches, has_more = await client.list_batches()

    assert batches == []
    assert has_more is False


async def test_list_batches_keeps_api_version(
    pool: HttpPool, respx_mock: respx.MockRouter
) -> None:
    base = "https://myres.openai.azure.com/openai?api-version=2024-10-21"
    client = OpenAIClient(pool, base_url=base, api_key=KEY, policy=FAST)
    route = respx_mock.get("https://myres.openai.azure.com/openai/batches").respond(
        200, json={"object": "list", "data": [], "has_more": False}
    )

    await client.list_batches(limit=5)

    params = route.calls.last.request.url.params
    assert params["api-version"] == "2024-10-21"
    assert params["limit"] == "5"
    assert "after" not in params


@pytest.mark.parametrize("limit", [0, 101])
async def test_list_batches_limit_checked(client: OpenAIClient, limit: int) -> None:
    with pytest.raises(ValueError, match="outside 1 to 100"):
        await client.list_batches(limit=limit)


# Error mapping


@pytest.mark.parametrize(
    ("status", "error_class", "calls"),
    [
        pytest.param(400, PermanentApiError, 1, id="400"),
        pytest.param(401, AuthError, 1, id="401"),
        pytest.param(403, AuthError, 1, id="403"),
        pytest.param(404, NotFoundError, 1, id="404"),
        pytest.param(422, PermanentApiError, 1, id="422"),
        pytest.param(408, TransientApiError, 3, id="408"),
        pytest.param(409, TransientApiError, 3, id="409"),
        pytest.param(429, TransientApiError, 3, id="429"),
        pytest.param(500, TransientApiError, 3, id="500"),
        pytest.param(502, TransientApiError, 3, id="502"),
        pytest.param(503, TransientApiError, 3, id="503"),
        pytest.param(504, TransientApiError, 3, id="504"),
    ],
)
async def test_status_code_mapping(
    client: OpenAIClient,
    respx_mock: respx.MockRouter,
    status: int,
    error_class: type[ApiError],
    calls: int,
) -> None:
    route = respx_mock.get(BATCH_URL).respond(
        status, json=error_json("something failed", "some_code", "some_type")
    )

    with pytest.raises(ApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert caught.value.service == "openai"
    assert caught.value.code == "some_code"
    assert route.call_count == calls


async def test_error_message_names_request(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    body = error_json(
        f"No batch found with id '{BATCH_ID}'.", "batch_not_found", "invalid_request"
    )
    respx_mock.get(BATCH_URL).respond(
        404, json=body, headers={"x-request-id": "req_123"}
    )

    with pytest.raises(NotFoundError) as caught:
        await client.get_batch(BATCH_ID)

    assert str(caught.value) == (
        f"OpenAI GET /v1/batches/{BATCH_ID} failed: 404 No batch found with id "
        f"'{BATCH_ID}'. (code batch_not_found, type invalid_request, "
        "request id req_123)"
    )
    assert caught.value.reference == "req_123"


async def test_error_body_filtered_and_cut(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    body = error_json("x" * 1000, None, "invalid_request_error")
    body["error"]["param"] = "param-value"
    body["debug"] = "internal-trace"
    respx_mock.get(BATCH_URL).respond(400, json=body)

    with pytest.raises(PermanentApiError) as caught:
        await client.get_batch(BATCH_ID)

    message = str(caught.value)
    assert "x" * 297 + "..." in message
    assert "x" * 298 not in message
    assert "param-value" not in message
    assert "internal-trace" not in message
    assert caught.value.code is None


async def test_non_json_error_body_dropped(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(BATCH_URL).respond(
        502, text="<html><body>upstream secret page</body></html>"
    )

    with pytest.raises(TransientApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert str(caught.value).endswith("failed: 502 Bad Gateway")
    assert "upstream" not in str(caught.value)


async def test_redirect_not_followed(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    redirect = respx_mock.get(BATCH_URL).respond(
        307, headers={"location": f"https://evil.example/{BATCH_ID}"}
    )
    elsewhere = respx_mock.get(f"https://evil.example/{BATCH_ID}").respond(200)

    with pytest.raises(PermanentApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert redirect.call_count == 1
    assert elsewhere.call_count == 0
    assert "redirect to 'https://evil.example/" in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(httpx.ConnectError("connection refused"), id="connect"),
        pytest.param(httpx.ReadTimeout("read timed out"), id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("disconnected"), id="dropped"),
    ],
)
async def test_transport_errors_are_transient(
    client: OpenAIClient, respx_mock: respx.MockRouter, error: Exception
) -> None:
    route = respx_mock.get(BATCH_URL).mock(side_effect=error)

    with pytest.raises(TransientApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert route.call_count == 3
    assert caught.value.status_code is None
    assert str(caught.value).startswith(f"OpenAI GET /v1/batches/{BATCH_ID} failed: ")


async def test_timeout_message_is_plain(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(BATCH_URL).mock(side_effect=httpx.ReadTimeout("read timed out"))

    with pytest.raises(TransientApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert str(caught.value).endswith("failed: timed out (ReadTimeout)")


async def test_slow_response_hits_total_timeout(respx_mock: respx.MockRouter) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1.0)
        return httpx.Response(200, json=batch_json())

    respx_mock.get(BATCH_URL).mock(side_effect=slow)
    policy = RetryPolicy(attempts=1)

    async with HttpPool(Settings(http_timeout=0.1)) as pool:
        client = OpenAIClient(pool, base_url=BASE, api_key=KEY, policy=policy)
        with pytest.raises(TransientApiError) as caught:
            await client.get_batch(BATCH_ID)

    assert str(caught.value).endswith("failed: timed out after 0.1 s")


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(200, text="<html>ok</html>"), id="not-json"),
        pytest.param(httpx.Response(200, json=[]), id="array"),
        pytest.param(httpx.Response(200, json={"id": BATCH_ID}), id="no-status"),
        pytest.param(httpx.Response(200, json=batch_json(id=None)), id="no-id"),
        pytest.param(
            httpx.Response(200, json=batch_json(id="batch_other")), id="other-id"
        ),
    ],
)
async def test_bad_success_body_is_transient(
    client: OpenAIClient, respx_mock: respx.MockRouter, response: httpx.Response
) -> None:
    route = respx_mock.get(BATCH_URL).mock(return_value=response)

    with pytest.raises(TransientApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert route.call_count == 3
    assert "returned an unexpected body" in str(caught.value)


async def test_retry_then_success(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(BATCH_URL).mock(
        side_effect=[
            httpx.Response(503),
            httpx.ReadTimeout("slow"),
            httpx.Response(200, json=batch_json()),
        ]
    )

    batch = await client.get_batch(BATCH_ID)

    assert batch.id == BATCH_ID
    assert route.call_count == 3


# Retry-After


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "7"}, 7.0, id="seconds"),
        pytest.param({"retry-after": "0.25"}, 0.25, id="float"),
        pytest.param({"retry-after-ms": "1250"}, 1.25, id="milliseconds"),
        pytest.param({}, None, id="absent"),
    ],
)
async def test_retry_after_on_error(
    pool: HttpPool,
    respx_mock: respx.MockRouter,
    headers: dict[str, str],
    expected: float | None,
) -> None:
    client = OpenAIClient(
        pool, base_url=BASE, api_key=KEY, policy=RetryPolicy(attempts=1)
    )
    respx_mock.get(BATCH_URL).respond(429, headers=headers)

    with pytest.raises(TransientApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert caught.value.retry_after == expected


async def test_retry_after_http_date(
    pool: HttpPool, respx_mock: respx.MockRouter
) -> None:
    client = OpenAIClient(
        pool, base_url=BASE, api_key=KEY, policy=RetryPolicy(attempts=1)
    )
    when = datetime.fromtimestamp(int(time.time()) + 120, tz=UTC)
    http_date = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    respx_mock.get(BATCH_URL).respond(503, headers={"retry-after": http_date})

    with pytest.raises(TransientApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert caught.value.retry_after is not None
    assert 110 <= caught.value.retry_after <= 120


async def test_retry_after_waited_then_success(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(BATCH_URL).mock(
        side_effect=[
            httpx.Response(429, headers={"retry-after-ms": "150"}),
            httpx.Response(200, json=batch_json()),
        ]
    )
    started = time.monotonic()

    await client.get_batch(BATCH_ID)

    assert route.call_count == 2
    assert time.monotonic() - started >= 0.14


async def test_long_retry_after_not_waited(
    pool: HttpPool, respx_mock: respx.MockRouter
) -> None:
    policy = RetryPolicy(attempts=4, max_retry_after=60.0)
    client = OpenAIClient(pool, base_url=BASE, api_key=KEY, policy=policy)
    route = respx_mock.get(BATCH_URL).respond(429, headers={"retry-after": "3600"})
    started = time.monotonic()

    with pytest.raises(TransientApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert route.call_count == 1
    assert caught.value.retry_after == 3600.0
    assert time.monotonic() - started < 1.0


# Secrets


async def test_echoed_key_scrubbed_from_error(
    client: OpenAIClient,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    body = error_json(f"Incorrect API key provided: {KEY}.", KEY, "invalid_request")
    respx_mock.get(BATCH_URL).respond(401, json=body, headers={"x-request-id": KEY})

    with pytest.raises(AuthError) as caught:
        await client.get_batch(BATCH_ID)

    assert KEY not in str(caught.value)
    assert "Incorrect API key provided: ***." in str(caught.value)
    assert caught.value.code == "***"
    assert caught.value.reference == "***"
    assert KEY not in caplog.text


async def test_echoed_key_scrubbed_on_retries(
    client: OpenAIClient,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    respx_mock.get(BATCH_URL).mock(
        side_effect=[
            httpx.Response(500, json=error_json(f"key {KEY} broke", None, "server")),
            httpx.ConnectError(f"cannot connect with {KEY}"),
            httpx.Response(200, text=f"not json {KEY}"),
        ]
    )

    with pytest.raises(TransientApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert KEY not in str(caught.value)
    assert "failed on attempt 2 of 3" in caplog.text
    assert KEY not in caplog.text


async def test_key_cut_by_clip_still_scrubbed(
    client: OpenAIClient, respx_mock: respx.MockRouter
) -> None:
    # The 300-character cut falls inside the key, so a late redaction would
    # leave its prefix in the message.
    text = "x" * 280 + KEY + "y" * 100
    respx_mock.get(BATCH_URL).respond(400, json=error_json(text, None, "invalid"))

    with pytest.raises(PermanentApiError) as caught:
        await client.get_batch(BATCH_ID)

    assert KEY[:10] not in str(caught.value)
    assert "x" * 280 + "***" in str(caught.value)


# HttpPool


async def test_limiter_caps_requests_in_flight(respx_mock: respx.MockRouter) -> None:
    in_flight = 0
    max_in_flight = 0

    async def tracked(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        batch_id = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json=batch_json(id=batch_id))

    route = respx_mock.get(url__startswith=f"{BASE}/batches/").mock(side_effect=tracked)

    async with HttpPool(Settings(concurrency=3)) as pool:
        client = OpenAIClient(pool, base_url=BASE, api_key=KEY, policy=FAST)
        ids = [f"batch_{n}" for n in range(20)]
        batches = await asyncio.gather(*(client.get_batch(i) for i in ids))

    assert [b.id for b in batches] == ids
    assert route.call_count == 20
    assert max_in_flight == 3


async def test_pool_one_client_per_origin() -> None:
    async with HttpPool(Settings()) as pool:
        first = pool.client_for("https://api.openai.com/v1")
        same = pool.client_for("HTTPS://API.OPENAI.COM:443/other?x=1")
        other_port = pool.client_for("https://api.openai.com:8443/v1")
        other_scheme = pool.client_for("http://api.openai.com/v1")

        assert same is first
        assert other_port is not first
        assert other_scheme is not first
        assert other_scheme is not other_port


async def test_pool_client_settings() -> None:
    settings = Settings(http_timeout=30.0, concurrency=7)
    async with HttpPool(settings) as pool:
        client = pool.client_for("https://api.openai.com/v1")

        assert client.follow_redirects is False
        assert client.trust_env is False
        assert client.timeout == httpx.Timeout(30.0, connect=5.0)
        assert client.headers["user-agent"] == USER_AGENT
        assert pool.limiter._value == 7


async def test_pool_short_timeout_caps_connect() -> None:
    async with HttpPool(Settings(http_timeout=2.0)) as pool:
        client = pool.client_for("https://api.openai.com/v1")

        assert client.timeout == httpx.Timeout(2.0, connect=2.0)


async def test_pool_closes_its_clients() -> None:
    pool = HttpPool(Settings())
    async with pool:
        client = pool.client_for("https://api.openai.com/v1")

    assert client.is_closed is True
    with pytest.raises(RuntimeError, match="HttpPool is closed"):
        pool.client_for("https://api.openai.com/v1")


@pytest.mark.parametrize("url", ["ftp://example.com", "api.openai.com/v1", ""])
async def test_client_rejects_bad_base_url(pool: HttpPool, url: str) -> None:
    with pytest.raises(ValueError, match="invalid API base URL"):
        OpenAIClient(pool, base_url=url, api_key=KEY, policy=FAST)


async def test_client_rejects_empty_key(pool: HttpPool) -> None:
    with pytest.raises(ValueError, match="api_key is empty"):
        OpenAIClient(pool, base_url=BASE, api_key="", policy=FAST)


def test_batch_is_frozen() -> None:
    batch = openai_api.parse_batch(batch_json())

    assert isinstance(batch, Batch)
    with pytest.raises(AttributeError):
        batch.status = "failed"  # type: ignore[misc]
