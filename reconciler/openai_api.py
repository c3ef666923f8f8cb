"""Client for the OpenAI Batch API, also served by Azure OpenAI.

Only reads: one batch by id, and one page of the batch list. Every request is
idempotent, so ``call_with_retries`` repeats transient failures. Responses are
parsed leniently because Azure deviates from OpenAI: capitalised statuses,
ISO-8601 timestamps, ``""`` in place of a missing file id and ``null``
request counts have all been seen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import quote

import httpx

from reconciler.errors import ApiError, TransientApiError
from reconciler.http_pool import (
    HttpPool,
    clip,
    describe_transport_error,
    error_class_for_status,
    json_body,
    redact,
    remote_text,
    url_origin,
)
from reconciler.retrying import RetryPolicy, call_with_retries, parse_retry_after
from reconciler.statuses import KNOWN_STATUSES, TERMINAL_STATUSES

logger = logging.getLogger(__name__)

R = TypeVar("R")

SERVICE = "openai"


AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com")
"""Hosts that take the key in an ``api-key`` header instead of a bearer token."""

MAX_PAGE_SIZE = 100

# Unknown statuses already logged, so each one is logged once per process.
_unknown_statuses_logged: set[str] = set()


@dataclass(frozen=True)
class RequestCounts:
    """Numbers of requests in a batch; Azure has sent all three as null."""

    total: int | None
    completed: int | None
    failed: int | None


@dataclass(frozen=True)
class BatchError:
    """One entry of a batch's ``errors.data``, mostly from failed validation."""

    code: str | None
    message: str | None
    line: int | None


@dataclass(frozen=True)
class Batch:
    """A batch as the API returned it, with Azure's deviations normalised.

    Attributes:
        status: lower-cased. An unknown status is kept and counts as not
            terminal.
        output_file_id: None when absent or ``""``. It can be None for a
            completed batch whose requests all failed.
        error_file_id: None when absent or ``""``.
        created_at: Unix seconds, like every other timestamp. ISO-8601
            strings are converted and unparsable values become None.
        errors: entries of ``errors.data``, empty when there are none.
    """

    id: str
    status: str
    request_counts: RequestCounts | None
    output_file_id: str | None
    error_file_id: str | None
    created_at: int | None
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    errors: tuple[BatchError, ...]

    @property
    def terminal(self) -> bool:
        """True when the status is final: completed, failed, cancelled, expired."""
        return self.status in TERMINAL_STATUSES

    @property
    def terminal_at(self) -> int | None:
        """Timestamp of the terminal status, or None when not terminal or unset."""
        timestamps = {
            "completed": self.completed_at,
            "failed": self.failed_at,
            "cancelled": self.cancelled_at,
            "expired": self.expired_at,
        }
        return timestamps.get(self.status)


class OpenAIClient:
    """Reads batches from OpenAI or Azure OpenAI.

    Args:
        pool: shared HTTP clients and limiter.
        base_url: API root such as ``https://api.openai.com/v1``. A query
            string, such as Azure's ``?api-version=2024-10-21``, is kept on
            every request.
        api_key: sent as ``Authorization: Bearer``, or as ``api-key`` to an
            Azure host, and removed from every error message.
        policy: retries of each request.

    Raises:
        ValueError: ``base_url`` is not an http(s) URL or ``api_key`` is empty.
    """

    def __init__(
        self, pool: HttpPool, *, base_url: str, api_key: str, policy: RetryPolicy
    ) -> None:
        url_origin(base_url)
        if not api_key:
            msg = "api_key is empty; set the OpenAI API key"
            raise ValueError(msg)

        self._pool = pool
        self._base_url = httpx.URL(base_url)
        self._secrets = [api_key]
        self._policy = policy
        host = self._base_url.host.lower()
        if host.endswith(AZURE_HOST_SUFFIXES):
            self._auth_headers = {"api-key": api_key}
        else:
            self._auth_headers = {"Authorization": f"Bearer {api_key}"}

    async def get_batch(self, batch_id: str) -> Batch:
        """Fetch one batch, retrying transient failures per the policy.

        Raises:
            ValueError: ``batch_id`` is empty.
            AuthError: the key is invalid (401) or lacks permission (403).
            NotFoundError: no batch has this id for this key (404).
            PermanentApiError: another 4xx or a redirect.
            TransientApiError: the last attempt got 408, 409, 429, 5xx, a
                transport error or a body that is not a batch.
        """
        if not batch_id:
            msg = "batch_id is empty"
            raise ValueError(msg)

        url = self._url("/batches/" + quote(batch_id, safe=""))
        what = f"OpenAI GET {url.path}"

        def parse(data: object) -> Batch:
            batch = parse_batch(data)
            if batch.id != batch_id:
                msg = "the batch in the response has a different id"
                raise ValueError(msg)

            return batch

        async def attempt() -> Batch:
            return await self._get(url, what, parse)

        return await call_with_retries(attempt, self._policy, what=what)

    async def list_batches(
        self, *, limit: int = 100, after: str | None = None
    ) -> tuple[list[Batch], bool]:
        """Fetch one page of batches, newest first, with the ``has_more`` flag.

        Pass the id of the last batch of a page as ``after`` for the next one.

        Raises:
            ValueError: ``limit`` is outside 1 to 100.
            ApiError: as for ``get_batch``.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            msg = f"limit={limit} is outside 1 to {MAX_PAGE_SIZE}"
            raise ValueError(msg)

        url = self._url("/batches")
        what = f"OpenAI GET {url.path}"
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after

        url = url.copy_merge_params(params)

        async def attempt() -> tuple[list[Batch], bool]:
            return await self._get(url, what, parse_batch_page)

        return await call_with_retries(attempt, self._policy, what=what)

    def _url(self, suffix: str) -> httpx.URL:
        path = self._base_url.path.rstrip("/") + suffix
        return self._base_url.copy_with(path=path)

    async def _get(self, url: httpx.URL, what: str, parse: Callable[[object], R]) -> R:
        """Send one GET and parse the body, raising an ``ApiError`` on failure."""
        try:
            response = await self._pool.send(
                "GET", url, headers=self._auth_headers, api=SERVICE
            )
        except (httpx.TransportError, TimeoutError) as exc:
            reason = describe_transport_error(exc, self._pool.timeout, self._secrets)
            message = self._redact(f"{what} failed: {reason}")
            raise TransientApiError(message, service=SERVICE) from exc

        request_id = remote_text(
            response.headers.get("x-request-id"), self._secrets, 100
        )
        logger.debug(
            "%s returned %d (request id %s)", what, response.status_code, request_id
        )
        if not response.is_success:
            raise self._error_from_response(response, what)

        try:
            return parse(json_body(response))
        except ValueError as exc:
            message = self._redact(f"{what} returned an unexpected body: {exc}")
            raise TransientApiError(
                message,
                service=SERVICE,
                status_code=response.status_code,
                reference=request_id,
            ) from None

    def _error_from_response(self, response: httpx.Response, what: str) -> ApiError:
        status = response.status_code
        error_type, code, text = _error_fields(response, self._secrets)
        request_id = remote_text(
            response.headers.get("x-request-id"), self._secrets, 100
        )

        details = []
        if code:
            details.append(f"code {code}")
        if error_type:
            details.append(f"type {error_type}")
        if request_id:
            details.append(f"request id {request_id}")

        message = f"{what} failed: {status} {text}"
        if details:
            message += f" ({', '.join(details)})"

        message = self._redact(message)
        cls = error_class_for_status(status)
        if issubclass(cls, TransientApiError):
            return cls(
                message,
                retry_after=parse_retry_after(response.headers),
                service=SERVICE,
                status_code=status,
                code=code,
                reference=request_id,
            )

        return cls(
            message,
            service=SERVICE,
            status_code=status,
            code=code,
            reference=request_id,
        )

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)


def _error_fields(
    response: httpx.Response, secrets: Sequence[str]
) -> tuple[str | None, str | None, str]:
    """Return type, code and message of an error body, redacted and cut short.

    Only these fields of ``{"error": {...}}`` are kept. A body of another
    shape is dropped, and the reason phrase is used as the message.
    """
    fallback = response.reason_phrase or "error"
    if response.is_redirect:
        location = remote_text(response.headers.get("location"), secrets, 200)
        fallback = (
            f"redirect to {location!r} not followed; "
            "set the base URL to the final address"
        )

    try:
        body = json_body(response)
    except ValueError:
        return None, None, fallback

    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, fallback

    error_type = remote_text(error.get("type"), secrets, 100)
    code = remote_text(error.get("code"), secrets, 100)
    message = remote_text(error.get("message"), secrets)
    return error_type, code, message or fallback


def parse_batch(data: object) -> Batch:
    """Build a ``Batch`` from a decoded batch object.

    Raises:
        ValueError: ``data`` is not an object with a string ``id`` and
            ``status``.
    """
    if not isinstance(data, dict):
        msg = "expected a batch object"
        raise ValueError(msg)

    batch_id = data.get("id")
    if not isinstance(batch_id, str) or not batch_id:
        msg = "the batch has no string 'id'"
        raise ValueError(msg)

    status = data.get("status")
    if not isinstance(status, str) or not status.strip():
        msg = f"batch {batch_id} has no string 'status'"
        raise ValueError(msg)

    status = status.strip().lower()
    if status not in KNOWN_STATUSES:
        _log_unknown_status(status, batch_id)

    return Batch(
        id=batch_id,
        status=status,
        request_counts=_request_counts(data.get("request_counts")),
        output_file_id=_file_id(data.get("output_file_id")),
        error_file_id=_file_id(data.get("error_file_id")),
        created_at=_timestamp(data.get("created_at")),
        in_progress_at=_timestamp(data.get("in_progress_at")),
        finalizing_at=_timestamp(data.get("finalizing_at")),
        completed_at=_timestamp(data.get("completed_at")),
        failed_at=_timestamp(data.get("failed_at")),
        expired_at=_timestamp(data.get("expired_at")),
        cancelling_at=_timestamp(data.get("cancelling_at")),
        cancelled_at=_timestamp(data.get("cancelled_at")),
        errors=_batch_errors(data.get("errors")),
    )


def parse_batch_page(data: object) -> tuple[list[Batch], bool]:
    """Build the batches and ``has_more`` flag from a decoded list envelope.

    Raises:
        ValueError: ``data`` has no ``data`` array, or an item is not a batch.
    """
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        msg = "expected a list object with a 'data' array"
        raise ValueError(msg)

    items = data["data"]
    has_more = data.get("has_more") is True
    return [parse_batch(item) for item in items], has_more


def _log_unknown_status(status: str, batch_id: str) -> None:
    if status in _unknown_statuses_logged:
        return

    _unknown_statuses_logged.add(status)
    logger.warning(
        "OpenAI batch %s has the unknown status %r; it counts as not terminal "
        "(further batches with this status are not logged)",
        batch_id,
        clip(status, 50),
    )


def _request_counts(value: object) -> RequestCounts | None:
    if not isinstance(value, dict):
        return None

    return RequestCounts(
        total=_integer(value.get("total")),
        completed=_integer(value.get("completed")),
        failed=_integer(value.get("failed")),
    )


def _batch_errors(value: object) -> tuple[BatchError, ...]:
    # OpenAI sends {"object": "list", "data": [...]}; a bare list is accepted too.
    items = value.get("data") if isinstance(value, dict) else value
    if not isinstance(items, list):
        return ()

    return tuple(
        BatchError(
            code=_text(item.get("code")),
            message=_text(item.get("message")),
            line=_integer(item.get("line")),
        )
        for item in items
        if isinstance(item, dict)
    )


def _file_id(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None

    if isinstance(value, int):
        return value

    if isinstance(value, float) and math.isfinite(value):
        return int(value)

    return None


def _timestamp(value: object) -> int | None:
    """Return Unix seconds from a number or an ISO-8601 string, else None."""
    if not isinstance(value, str):
        return _integer(value)

    text = value.strip()
    if not text:
        return None

    try:
        return int(text)
    except ValueError:
        pass

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None

    if moment.tzinfo is None:
        # NOTE: an ISO string without an offset is taken as UTC.
        moment = moment.replace(tzinfo=UTC)

    return int(moment.timestamp())
