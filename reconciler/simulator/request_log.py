"""Log of the API requests the simulator received, read through the control API.

Entries never contain header values, so tokens and API keys stay out of it.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from reconciler.simulator.faults import FaultRule
from reconciler.simulator.http_messages import Request


class RequestLog:
    """Thread-safe list of request entries in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def record(
        self, service: str, request: Request, fault: FaultRule | None, time: float
    ) -> dict[str, Any]:
        """Append an entry for ``request`` and return it for ``set_status``.

        ``retry_count`` is the OpenAI SDK's ``x-stainless-retry-count`` header,
        which counts the SDK's own retries, or None without that header.
        """
        retry_header = request.headers.get("x-stainless-retry-count")
        entry: dict[str, Any] = {
            "service": service,
            "method": request.method,
            "path": request.path,
            "query": copy.deepcopy(request.query),
            "time": time,
            "fault": copy.deepcopy(fault.spec) if fault is not None else None,
            "status": None,
            "retry_count": _parse_retry_count(retry_header),
        }
        with self._lock:
            self._entries.append(entry)
        return entry

    def set_status(self, entry: dict[str, Any], status: int | None) -> None:
        """Store the response status of an entry. None means the connection was
        dropped without a response."""
        with self._lock:
            entry["status"] = status

    def entries(self) -> list[dict[str, Any]]:
        """Return a copy of all entries."""
        with self._lock:
            return copy.deepcopy(self._entries)

    def clear(self) -> None:
        """Remove all entries."""
        with self._lock:
            self._entries.clear()


def _parse_retry_count(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
