"""The one retry policy for idempotent API requests.

``call_with_retries`` repeats a request that raised ``TransientApiError``,
waiting with exponential backoff and jitter, or exactly as long as the server
requested through ``Retry-After`` when that is not longer than
``RetryPolicy.max_retry_after``. It never repeats ``OutcomeUnknownError``,
because a create request that may have taken effect must be looked up first.

The retry loop is stamina's. Tests switch every wait off with
``stamina.set_testing(True, attempts=N)``. In that mode stamina also makes
exactly N attempts, whatever the value of ``RetryPolicy.attempts``, but the
log lines still number the attempts against ``RetryPolicy.attempts``.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TypeVar

import stamina

from reconciler.errors import OutcomeUnknownError, TransientApiError
from reconciler.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and waits for one idempotent request.

    Attributes:
        attempts: attempts per request, the first included.
        wait_initial: backoff before the second attempt, in seconds; it doubles
            for each further attempt.
        wait_max: maximum backoff in seconds, jitter included.
        wait_jitter: maximum random jitter added to each backoff, in seconds.
        max_retry_after: longest ``Retry-After`` in seconds that is waited for.
            A longer one raises the error at once, so the caller can defer the
            request to a later cycle.
    """

    attempts: int = 4
    wait_initial: float = 0.5
    wait_max: float = 8.0
    wait_jitter: float = 1.0
    max_retry_after: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """Build the policy from ``retry_attempts`` and ``retry_max_wait``."""
        return cls(
            attempts=settings.retry_attempts,
            max_retry_after=settings.retry_max_wait,
        )


async def call_with_retries(
    fn: Callable[[], Awaitable[T]], policy: RetryPolicy, *, what: str
) -> T:
    """Await ``fn()`` until it succeeds or the policy gives up.

    Args:
        fn: makes one attempt and raises an ``ApiError`` when it fails.
        policy: attempts and waits.
        what: the request for log lines, such as ``"OpenAI GET /v1/batches/x"``.

    Returns:
        The result of the first successful attempt.

    Raises:
        ApiError: the error of the last attempt. ``TransientApiError`` is
            raised when the attempts run out or when its ``retry_after`` is
            longer than ``policy.max_retry_after``. ``OutcomeUnknownError`` and
            ``PermanentApiError`` are raised after their first occurrence.
    """
    retry_context = stamina.retry_context(
        on=lambda exc: _retry_decision(exc, policy),
        attempts=policy.attempts,
        timeout=None,
        wait_initial=policy.wait_initial,
        wait_max=policy.wait_max,
        wait_jitter=policy.wait_jitter,
    )
    async for attempt in retry_context:
        with attempt:
            try:
                return await fn()
            except TransientApiError as exc:
                _log_failed_attempt(exc, attempt, policy, what)
                raise

    # stamina re-raises the last error when the attempts run out.
    msg = f"retry loop for {what} ended without a result or an error"
    raise AssertionError(msg)


def _retry_decision(exc: Exception, policy: RetryPolicy) -> bool | float:
    """Return False to raise, True to back off, or the exact wait in seconds."""
    if not isinstance(exc, TransientApiError):
        return False

    if isinstance(exc, OutcomeUnknownError):
        return False

    if exc.retry_after is None:
        return True

    if exc.retry_after > policy.max_retry_after:
        return False

    return max(exc.retry_after, 0.0)


def _log_failed_attempt(
    exc: TransientApiError,
    attempt: stamina.Attempt,
    policy: RetryPolicy,
    what: str,
) -> None:
    decision = _retry_decision(exc, policy)
    if decision is False:
        if exc.retry_after is not None and exc.retry_after > policy.max_retry_after:
            logger.warning(
                "%s: the server requested a retry after %.1f s, more than the "
                "%.1f s limit, so the request is not retried now: %s",
                what,
                exc.retry_after,
                policy.max_retry_after,
                exc,
            )

        return

    if attempt.num >= policy.attempts:
        logger.warning(
            "%s failed on attempt %d of %d, giving up: %s",
            what,
            attempt.num,
            policy.attempts,
            exc,
        )
        return

    if decision is True:
        # attempt.next_wait is the backoff without its random jitter.
        low = attempt.next_wait
        high = min(policy.wait_max, low + policy.wait_jitter)
        logger.warning(
            "%s failed on attempt %d of %d, retrying in %.1f to %.1f s: %s",
            what,
            attempt.num,
            policy.attempts,
            low,
            high,
            exc,
        )
        return

    logger.warning(
        "%s failed on attempt %d of %d, retrying in %.1f s as the server requested: %s",
        what,
        attempt.num,
        policy.attempts,
        decision,
        exc,
    )


def parse_retry_after(
    headers: Mapping[str, str], *, now: float | None = None
) -> float | None:
    """Return the delay in seconds that a response requests, or None.

    Reads ``retry-after-ms`` (milliseconds) first, then ``retry-after`` as
    seconds (a float is accepted) or as an HTTP-date. A date in the past gives
    0. Values that are negative, not finite or unparsable are ignored.

    Args:
        headers: response headers; the lookup must ignore case, as in
            ``httpx.Headers``.
        now: the current Unix time, for tests; defaults to ``time.time()``.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        milliseconds = _finite_float(raw_ms)
        if milliseconds is not None and milliseconds >= 0:
            return milliseconds / 1000

    raw = headers.get("retry-after")
    if raw is None:
        return None

    seconds = _finite_float(raw)
    if seconds is not None:
        return seconds if seconds >= 0 else None

    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None

    if when.tzinfo is None:
        # parsedate_to_datetime returns a naive datetime for "-0000", which
        # still means UTC.
        when = when.replace(tzinfo=UTC)

    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def _finite_float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None

    return value if math.isfinite(value) else None
