"""Filtering, sorting and paging of ``GET /search/jobs`` over job objects.

Query parameters follow PHP conventions: ``status[]=a&status[]=b`` gives
several values, while a repeated plain key keeps only its last value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from reconciler.simulator.job_requests import JobRequestError

DEFAULT_LIMIT = 100
MAX_LIMIT = 500

# Query parameter names, each with its alias, and the job field they filter.
_FIELD_FILTERS = (
    (("id",), "id"),
    (("runId",), "runId"),
    (("componentId", "component"), "component"),
    (("configId", "config"), "config"),
    (("status",), "status"),
)

_SORT_FIELDS = (
    "id",
    "runId",
    "componentId",
    "configId",
    "status",
    "createdTime",
    "startTime",
    "endTime",
    "durationSeconds",
)
# Job field read for each sortBy value, where the names differ.
_SORT_FIELD_NAMES = {"componentId": "component", "configId": "config"}


def search_jobs(
    jobs: list[dict[str, Any]], query: Mapping[str, list[str]]
) -> list[dict[str, Any]]:
    """Return the page of ``jobs`` that ``query`` selects, as the search does.

    Raises JobRequestError for an invalid parameter value.
    """
    selected = jobs
    for names, job_field in _FIELD_FILTERS:
        values = _values(query, names)
        if values:
            selected = [job for job in selected if job[job_field] in values]
    created_from = _time_parameter(query, "createdTimeFrom")
    if created_from is not None:
        selected = [job for job in selected if _job_time(job) >= created_from]
    created_to = _time_parameter(query, "createdTimeTo")
    if created_to is not None:
        selected = [job for job in selected if _job_time(job) <= created_to]
    sort_by = _last(query, "sortBy") or "id"
    if sort_by not in _SORT_FIELDS:
        raise JobRequestError(
            f'Invalid sortBy "{sort_by}". Allowed values: {", ".join(_SORT_FIELDS)}.'
        )
    sort_order = _last(query, "sortOrder") or "desc"
    if sort_order not in ("asc", "desc"):
        raise JobRequestError(
            f'Invalid sortOrder "{sort_order}". Allowed values: asc, desc.'
        )
    selected = sorted(selected, key=_sort_key(sort_by), reverse=sort_order == "desc")
    limit = _int_parameter(query, "limit", DEFAULT_LIMIT, minimum=1)
    if limit > MAX_LIMIT:
        raise JobRequestError(f'Invalid limit "{limit}". The maximum is {MAX_LIMIT}.')
    offset = _int_parameter(query, "offset", 0, minimum=0)
    return selected[offset : offset + limit]


def _values(query: Mapping[str, list[str]], names: tuple[str, ...]) -> list[str]:
    for name in names:
        if f"{name}[]" in query:
            return list(query[f"{name}[]"])
        if name in query:
            return [query[name][-1]]
    return []


def _last(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _int_parameter(
    query: Mapping[str, list[str]], name: str, default: int, *, minimum: int
) -> int:
    raw = _last(query, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise JobRequestError(f'Invalid {name} "{raw}". Expected an integer.') from None
    if value < minimum:
        raise JobRequestError(f'Invalid {name} "{raw}". The minimum is {minimum}.')
    return value


def _time_parameter(query: Mapping[str, list[str]], name: str) -> float | None:
    raw = _last(query, name)
    if raw is None or raw == "":
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        # NOTE: the real search also accepts relative strings such as "-8 hours";
        # the simulator accepts ISO-8601 only.
        raise JobRequestError(
            f'Invalid {name} "{raw}". Expected an ISO-8601 date and time.'
        ) from None
    if parsed.tzinfo is None:
        raise JobRequestError(
            f'Invalid {name} "{raw}". The time must include a UTC offset.'
        )
    return parsed.timestamp()


def _job_time(job: Mapping[str, Any]) -> float:
    # Compares the second-precision createdTime that the job object shows, so a
    # client can search from a createdTime it has read.
    return datetime.fromisoformat(job["createdTime"]).timestamp()


def _sort_key(sort_by: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    job_field = _SORT_FIELD_NAMES.get(sort_by, sort_by)

    def key(job: dict[str, Any]) -> tuple[Any, ...]:
        value = job[job_field]
        if sort_by in ("id", "runId"):
            return (0, int(value), job["id"])
        if sort_by in ("createdTime", "startTime", "endTime"):
            # Jobs without the time sort before those with it.
            if value is None:
                return (0, 0.0, int(job["id"]))
            return (1, datetime.fromisoformat(value).timestamp(), int(job["id"]))
        if value is None:
            return (0, "", int(job["id"]))
        return (1, value, int(job["id"]))

    return key
