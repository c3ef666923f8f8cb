"""Client for the Keboola Job Queue API.

``create_job`` makes exactly one attempt. When its outcome cannot be known
after a timeout, a dropped connection, a 5xx response or a success response
without a job, it raises ``OutcomeUnknownError``. The caller must then search
for the job with ``search_jobs`` before sending the request again. Reads are retried
per the ``RetryPolicy``.

Keboola's PHP services encode an empty object as ``[]``, so every field that
should hold an object also accepts ``[]``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import quote

import httpx

from reconciler.errors import (
    ApiError,
    OutcomeUnknownError,
    PermanentApiError,
    TransientApiError,
)
from reconciler.http_pool import (
    HttpPool,
    describe_transport_error,
    error_class_for_status,
    json_body,
    redact,
    remote_text,
    request_never_sent,
    url_origin,
)
from reconciler.retrying import RetryPolicy, call_with_retries, parse_retry_after

logger = logging.getLogger(__name__)

R = TypeVar("R")

SERVICE = "keboola"

FINAL_STATUSES: frozenset[str] = frozenset(
    {"success", "warning", "error", "cancelled", "terminated"}
)

SEARCH_PAGE_SIZE = 100

MAX_SEARCH_PAGES = 100
"""Maximum pages that one ``search_jobs`` call reads, 10,000 jobs at 100 each."""

# The last part of a "<project id>-<token id>-<secret>" token is redacted on
# its own too when it is at least this long, in case a server echoes only it.
_MIN_SECRET_PART = 16


@dataclass(frozen=True)
class KeboolaJob:
    """A queue job, reduced to the fields TeckoChecker uses.

    Attributes:
        id: job id; a numeric id is turned into a string.
        is_finished: ``isFinished`` when present, else whether ``status`` is
            in ``FINAL_STATUSES``.
        message: ``result.message``, or None when absent.
        created_time: ``createdTime`` as sent, ISO-8601 with an offset.
        url: the API URL of the job.
        variables: ``variableValuesData.values`` as a name to value map.
            None when the job has no ``variableValuesData`` or it is null,
            and empty when it has no values.
    """

    id: str
    status: str
    is_finished: bool
    message: str | None
    created_time: str | None
    url: str | None
    variables: dict[str, str] | None


class KeboolaClient:
    """Creates and reads jobs of the Keboola Job Queue API.

    Args:
        pool: shared HTTP clients and limiter.
        queue_url: root of the queue API, such as ``https://queue.keboola.com``.
        token: Storage API token, sent as ``X-StorageApi-Token`` and removed
            from every error message.
        policy: retries of ``get_job`` and ``search_jobs``.

    Raises:
        ValueError: ``queue_url`` is not an http(s) URL or ``token`` is empty.
    """

    def __init__(
        self, pool: HttpPool, *, queue_url: str, token: str, policy: RetryPolicy
    ) -> None:
        url_origin(queue_url)
        if not token:
            msg = "token is empty; set the Keboola Storage API token"
            raise ValueError(msg)

        self._pool = pool
        self._queue_url = httpx.URL(queue_url)
        self._headers = {"X-StorageApi-Token": token}
        self._policy = policy
        self._secrets = [token]
        secret_part = token.rsplit("-", 1)[-1]
        if len(secret_part) >= _MIN_SECRET_PART:
            self._secrets.append(secret_part)

    async def create_job(
        self,
        *,
        component_id: str,
        configuration_id: str,
        variables: Sequence[tuple[str, str]],
    ) -> KeboolaJob:
        """Create a job that runs a stored configuration with inline variables.

        Sends one ``POST /jobs`` and never repeats it. The variables fill the
        placeholders of the stored configuration, which stays unchanged. No
        ``configData`` is sent, because it would replace the stored
        configuration for this run.

        Raises:
            TransientApiError: 429, or no connection could be opened. The job
                was not created, so the request may be sent again.
            OutcomeUnknownError: a timeout, a dropped connection, a 5xx
                response or a success response without a job. The job may
                exist.
            AuthError: the token is invalid (401) or not allowed (403).
            PermanentApiError: another 4xx, with Keboola's message and
                ``exceptionId`` as ``reference``, or a redirect.
        """
        body = {
            "mode": "run",
            "component": component_id,
            "config": configuration_id,
            "variableValuesData": {
                "values": [{"name": name, "value": value} for name, value in variables]
            },
        }
        url = self._url("/jobs")
        what = f"Keboola POST {url.path}"
        try:
            response = await self._pool.send(
                "POST", url, headers=self._headers, json=body, api=SERVICE
            )
        except (httpx.TransportError, TimeoutError) as exc:
            raise self._transport_error(exc, what, creating=True) from exc

        logger.debug("%s returned %d", what, response.status_code)
        if not response.is_success:
            raise self._error_from_response(response, what, creating=True)

        try:
            return parse_job(json_body(response))
        except ValueError as exc:
            message = self._redact(
                f"{what} returned {response.status_code} without a job: {exc}; "
                "the job may exist"
            )
            raise OutcomeUnknownError(
                message, service=SERVICE, status_code=response.status_code
            ) from None

    async def get_job(self, job_id: str) -> KeboolaJob:
        """Fetch one job, retrying transient failures per the policy.

        Raises:
            ValueError: ``job_id`` is empty.
            AuthError: the token is invalid (401) or not allowed (403).
            NotFoundError: no job has this id (404).
            PermanentApiError: another 4xx or a redirect.
            TransientApiError: the last attempt got 408, 409, 429, 5xx, a
                transport error or a body that is not a job.
        """
        if not job_id:
            msg = "job_id is empty"
            raise ValueError(msg)

        url = self._url("/jobs/" + quote(job_id, safe=""))
        what = f"Keboola GET {url.path}"

        async def attempt() -> KeboolaJob:
            return await self._get(url, what, parse_job)

        return await call_with_retries(attempt, self._policy, what=what)

    async def search_jobs(
        self, *, component_id: str, configuration_id: str, created_from: datetime
    ) -> list[KeboolaJob]:
        """Fetch the jobs of one configuration created at or after a moment.

        Reads pages of 100, newest first, until a page is shorter than 100;
        each page is retried per the policy. A job seen on two pages, because
        new jobs shifted the offsets, is returned once.

        Args:
            component_id: component of the configuration.
            configuration_id: id of the stored configuration.
            created_from: timezone-aware lower bound of ``createdTime``; it is
                sent in UTC, rounded down to the second.

        Raises:
            ValueError: ``created_from`` has no timezone.
            ApiError: as for ``get_job``, except that 404 is unexpected.
        """
        if created_from.tzinfo is None or created_from.utcoffset() is None:
            msg = "created_from must be timezone-aware, such as datetime.now(UTC)"
            raise ValueError(msg)

        since = created_from.astimezone(UTC).replace(microsecond=0).isoformat()
        base = self._url("/search/jobs")
        what = f"Keboola GET {base.path}"
        jobs: dict[str, KeboolaJob] = {}

        for page_number in range(MAX_SEARCH_PAGES):
            url = base.copy_merge_params(
                {
                    "componentId": component_id,
                    "configId": configuration_id,
                    "createdTimeFrom": since,
                    "sortBy": "createdTime",
                    "sortOrder": "desc",
                    "limit": SEARCH_PAGE_SIZE,
                    "offset": page_number * SEARCH_PAGE_SIZE,
                }
            )

            attempt = functools.partial(self._get, url, what, parse_job_list)
            page = await call_with_retries(attempt, self._policy, what=what)
            for job in page:
                jobs.setdefault(job.id, job)

            if len(page) < SEARCH_PAGE_SIZE:
                return list(jobs.values())

        logger.warning(
            "%s for component %s, configuration %s: stopped after %d pages "
            "(%d jobs); older jobs are not included",
            what,
            component_id,
            configuration_id,
            MAX_SEARCH_PAGES,
            len(jobs),
        )
        return list(jobs.values())

    def _url(self, suffix: str) -> httpx.URL:
        path = self._queue_url.path.rstrip("/") + suffix
        return self._queue_url.copy_with(path=path)

    async def _get(self, url: httpx.URL, what: str, parse: Callable[[object], R]) -> R:
        """Send one GET and parse the body, raising an ``ApiError`` on failure."""
        try:
            response = await self._pool.send(
                "GET", url, headers=self._headers, api=SERVICE
            )
        except (httpx.TransportError, TimeoutError) as exc:
            raise self._transport_error(exc, what, creating=False) from exc

        logger.debug("%s returned %d", what, response.status_code)
        if not response.is_success:
            raise self._error_from_response(response, what, creating=False)

        try:
            return parse(json_body(response))
        except ValueError as exc:
            message = self._redact(f"{what} returned an unexpected body: {exc}")
            raise TransientApiError(
                message, service=SERVICE, status_code=response.status_code
            ) from None

    def _transport_error(
        self, exc: BaseException, what: str, *, creating: bool
    ) -> TransientApiError:
        reason = describe_transport_error(exc, self._pool.timeout, self._secrets)
        if creating and not request_never_sent(exc):
            message = self._redact(f"{what} failed: {reason}; the job may exist")
            return OutcomeUnknownError(message, service=SERVICE)

        message = self._redact(f"{what} failed: {reason}")
        return TransientApiError(message, service=SERVICE)

    def _error_from_response(
        self, response: httpx.Response, what: str, *, creating: bool
    ) -> ApiError:
        status = response.status_code
        code, exception_id, text = _error_fields(response, self._secrets)

        details = []
        if code:
            details.append(f"code {code}")
        if exception_id:
            details.append(f"exception id {exception_id}")

        message = f"{what} failed: {status} {text}"
        if details:
            message += f" ({', '.join(details)})"

        message = self._redact(message)
        cls = error_class_for_status(status)

        if creating and status >= 500:
            return OutcomeUnknownError(
                message + "; the job may exist",
                service=SERVICE,
                status_code=status,
                code=code,
                reference=exception_id,
            )

        if creating and status in (408, 409):
            # Only a 429 response shows for certain that no job was created
            # and that a later attempt may pass.
            cls = PermanentApiError

        if issubclass(cls, TransientApiError):
            return cls(
                message,
                retry_after=parse_retry_after(response.headers),
                service=SERVICE,
                status_code=status,
                code=code,
                reference=exception_id,
            )

        return cls(
            message,
            service=SERVICE,
            status_code=status,
            code=code,
            reference=exception_id,
        )

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)


def _error_fields(
    response: httpx.Response, secrets: Sequence[str]
) -> tuple[str | None, str | None, str]:
    """Return code, exception id and message of an error body, redacted and cut short.

    Only ``error``, ``code`` and ``exceptionId`` are kept. A body that is not
    an object is dropped, and the reason phrase is used as the message.
    """
    fallback = response.reason_phrase or "error"
    if response.is_redirect:
        location = remote_text(response.headers.get("location"), secrets, 200)
        fallback = (
            f"redirect to {location!r} not followed; "
            "set the queue URL to the final address"
        )

    try:
        body = json_body(response)
    except ValueError:
        return None, None, fallback

    if not isinstance(body, dict):
        return None, None, fallback

    raw_code = body.get("code")
    if isinstance(raw_code, int) and not isinstance(raw_code, bool):
        raw_code = str(raw_code)

    code = remote_text(raw_code, secrets, 100)
    exception_id = remote_text(body.get("exceptionId"), secrets, 100)
    message = remote_text(body.get("error"), secrets)
    return code, exception_id, message or fallback


def parse_job(data: object) -> KeboolaJob:
    """Build a ``KeboolaJob`` from a decoded job object.

    Raises:
        ValueError: ``data`` is not an object with an ``id`` and a string
            ``status``.
    """
    if not isinstance(data, dict):
        msg = "expected a job object"
        raise ValueError(msg)

    raw_id = data.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)

    if not isinstance(raw_id, str) or not raw_id:
        msg = "the job has no string or integer 'id'"
        raise ValueError(msg)

    status = data.get("status")
    if not isinstance(status, str) or not status:
        msg = f"job {raw_id} has no string 'status'"
        raise ValueError(msg)

    is_finished = data.get("isFinished")
    if not isinstance(is_finished, bool):
        is_finished = status in FINAL_STATUSES

    result = data.get("result")
    message = result.get("message") if isinstance(result, dict) else None

    return KeboolaJob(
        id=raw_id,
        status=status,
        is_finished=is_finished,
        message=message if isinstance(message, str) else None,
        created_time=_text(data.get("createdTime")),
        url=_text(data.get("url")),
        variables=_variables(data),
    )


def parse_job_list(data: object) -> list[KeboolaJob]:
    """Build jobs from a decoded search response, a bare array of jobs.

    Raises:
        ValueError: ``data`` is not an array, or an item is not a job.
    """
    if not isinstance(data, list):
        msg = "expected an array of jobs"
        raise ValueError(msg)

    return [parse_job(item) for item in data]


def _variables(job: dict[str, object]) -> dict[str, str] | None:
    """Return ``variableValuesData.values`` as a map; see ``KeboolaJob``."""
    if "variableValuesData" not in job or job["variableValuesData"] is None:
        return None

    data = job["variableValuesData"]
    values = data.get("values") if isinstance(data, dict) else None
    if not isinstance(values, list):
        return {}

    variables: dict[str, str] = {}
    for item in values:
        if not isinstance(item, dict):
            continue

        name = item.get("name")
        value = item.get("value")
        if not isinstance(name, str):
            continue

        # Keboola casts values to strings on its side; mirror that for numbers.
        if isinstance(value, str):
            variables[name] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            variables[name] = str(value)

    return variables


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
