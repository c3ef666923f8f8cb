"""Tests of the retry policy: what is retried, how long it waits, what it logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
import stamina

from reconciler.errors import (
    ApiError,
    AuthError,
    OutcomeUnknownError,
    PermanentApiError,
    TransientApiError,
)
from reconciler.retrying import RetryPolicy, call_with_retries, parse_retry_after
from reconciler.settings import Settings

# Short real waits, so the tests prove that waits happen without being slow.
FAST = RetryPolicy(attempts=4, wait_initial=0.001, wait_max=0.002, wait_jitter=0.0)


class FailingCall:
    """An async callable that raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.call_times: list[float] = []

    async def __call__(self) -> str:
        self.calls += 1
        self.call_times.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)

        return "ok"


def transient(retry_after: float | None = None) -> TransientApiError:
    return TransientApiError(
        "OpenAI GET /v1/batches/b failed: 503 Service Unavailable",
        service="openai",
        status_code=503,
        retry_after=retry_after,
    )


def always(make_error: Callable[[], Exception], count: int = 20) -> FailingCall:
    return FailingCall(*(make_error() for _ in range(count)))


async def test_retries_transient_until_success() -> None:
    call = FailingCall(transient(), transient())

    result = await call_with_retries(call, FAST, what="test call")

    assert result == "ok"
    assert call.calls == 3


async def test_gives_up_after_policy_attempts() -> None:
    call = always(transient)

    with pytest.raises(TransientApiError):
        await call_with_retries(call, FAST, what="test call")

    assert call.calls == FAST.attempts


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(
            OutcomeUnknownError("POST /jobs timed out", service="keboola"),
            id="outcome-unknown",
        ),
        pytest.param(PermanentApiError("400", service="openai"), id="permanent"),
        pytest.param(AuthError("401", service="openai"), id="auth"),
        pytest.param(ValueError("a bug"), id="not-an-api-error"),
    ],
)
async def test_non_transient_errors_not_retried(error: Exception) -> None:
    call = FailingCall(error)

    with pytest.raises(type(error)):
        await call_with_retries(call, FAST, what="test call")

    assert call.calls == 1


async def test_backoff_doubles_between_attempts() -> None:
    policy = RetryPolicy(attempts=3, wait_initial=0.05, wait_max=1.0, wait_jitter=0.0)
    call = always(transient)

    with pytest.raises(TransientApiError):
        await call_with_retries(call, policy, what="test call")

    first_wait = call.call_times[1] - call.call_times[0]
    second_wait = call.call_times[2] - call.call_times[1]
    assert first_wait >= 0.045
    assert second_wait >= 0.095


async def test_backoff_capped_at_wait_max() -> None:
    policy = RetryPolicy(attempts=3, wait_initial=0.05, wait_max=0.06, wait_jitter=0.0)
    call = always(transient)

    with pytest.raises(TransientApiError):
        await call_with_retries(call, policy, what="test call")

    second_wait = call.call_times[2] - call.call_times[1]
    assert second_wait >= 0.055
    assert second_wait < 0.095


async def test_retry_after_is_the_wait() -> None:
    call = FailingCall(transient(retry_after=0.2))

    result = await call_with_retries(call, FAST, what="test call")

    assert result == "ok"
    assert call.calls == 2
    assert call.call_times[1] - call.call_times[0] >= 0.19


async def test_zero_retry_after_retries_at_once() -> None:
    call = FailingCall(transient(retry_after=0.0))

    result = await call_with_retries(call, FAST, what="test call")

    assert result == "ok"
    assert call.calls == 2


async def test_too_long_retry_after_raises_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = RetryPolicy(attempts=4, max_retry_after=60.0)
    call = always(lambda: transient(retry_after=61.0))
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()

    with pytest.raises(TransientApiError) as caught:
        await call_with_retries(call, policy, what="test call")

    assert call.calls == 1
    assert time.monotonic() - started < 1.0
    assert caught.value.retry_after == 61.0
    assert "more than the 60.0 s limit" in caplog.text


async def test_retry_after_at_limit_is_waited() -> None:
    policy = RetryPolicy(attempts=2, wait_initial=0.001, max_retry_after=0.1)
    call = FailingCall(transient(retry_after=0.1))

    result = await call_with_retries(call, policy, what="test call")

    assert result == "ok"
    assert call.call_times[1] - call.call_times[0] >= 0.09


async def test_logs_each_retry_and_giving_up(caplog: pytest.LogCaptureFixture) -> None:
    policy = RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.002, wait_jitter=0)
    call = always(transient)
    caplog.set_level(logging.DEBUG, logger="reconciler.retrying")

    with pytest.raises(TransientApiError):
        await call_with_retries(call, policy, what="OpenAI GET /v1/batches/b")

    messages = [
        r.getMessage() for r in caplog.records if r.name == "reconciler.retrying"
    ]
    assert len(messages) == 3
    assert messages[0].startswith(
        "OpenAI GET /v1/batches/b failed on attempt 1 of 3, retrying in 0.0 to 0.0 s"
    )
    assert "attempt 2 of 3, retrying in" in messages[1]
    assert "attempt 3 of 3, giving up" in messages[2]
    assert "503 Service Unavailable" in messages[2]


async def test_logs_server_requested_wait(caplog: pytest.LogCaptureFixture) -> None:
    call = FailingCall(transient(retry_after=0.01))
    caplog.set_level(logging.DEBUG, logger="reconciler.retrying")

    await call_with_retries(call, FAST, what="test call")

    assert "retrying in 0.0 s as the server requested" in caplog.text


async def test_testing_mode_skips_waits() -> None:
    call = always(lambda: transient(retry_after=30.0))
    started = time.monotonic()

    with stamina.set_testing(True, attempts=3), pytest.raises(TransientApiError):
        await call_with_retries(call, RetryPolicy(), what="test call")

    assert call.calls == 3
    assert time.monotonic() - started < 1.0


async def test_last_error_is_raised() -> None:
    first = transient()
    last = TransientApiError("second failure", service="openai")
    call = FailingCall(first, last, *(transient() for _ in range(5)))
    policy = RetryPolicy(attempts=2, wait_initial=0.001, wait_max=0.001, wait_jitter=0)

    with pytest.raises(ApiError) as caught:
        await call_with_retries(call, policy, what="test call")

    assert caught.value is last


async def test_cancellation_not_retried() -> None:
    calls = 0

    async def hang() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return "never"

    task = asyncio.create_task(call_with_retries(hang, FAST, what="test call"))
    await asyncio.sleep(0.05)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    assert calls == 1


def test_policy_from_settings() -> None:
    settings = Settings(retry_attempts=7, retry_max_wait=12.5)

    policy = RetryPolicy.from_settings(settings)

    assert policy.attempts == 7
    assert policy.max_retry_after == 12.5
    assert policy.wait_initial == RetryPolicy().wait_initial


NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "2"}, 2.0, id="seconds"),
        pytest.param({"retry-after": "1.5"}, 1.5, id="float-seconds"),
        pytest.param({"retry-after": " 3 "}, 3.0, id="spaces"),
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="milliseconds"),
        pytest.param(
            {"retry-after-ms": "250", "retry-after": "9"}, 0.25, id="ms-first"
        ),
        pytest.param(
            {"retry-after-ms": "soon", "retry-after": "9"}, 9.0, id="bad-ms-skipped"
        ),
        pytest.param(
            {"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0, id="http-date"
        ),
        pytest.param(
            {"retry-after": "Tue, 14 Nov 2023 22:13:50 -0000"}, 30.0, id="date-0000"
        ),
        pytest.param(
            {"retry-after": "Tue, 14 Nov 2023 22:00:00 GMT"}, 0.0, id="past-date"
        ),
        pytest.param({"retry-after": "0"}, 0.0, id="zero"),
        pytest.param({"retry-after": "-5"}, None, id="negative"),
        pytest.param({"retry-after": "nan"}, None, id="nan"),
        pytest.param({"retry-after": "inf"}, None, id="infinite"),
        pytest.param({"retry-after": "later"}, None, id="garbage"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected
