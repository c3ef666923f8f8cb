"""UTC timestamps as the state database and status files write them."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Return the current time in UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


def to_iso(moment: datetime) -> str:
    """Format a moment as ISO 8601 in UTC with a ``Z`` suffix."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str) -> datetime:
    """Parse a timestamp written by ``to_iso`` (or any ISO 8601 with offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def from_unix(seconds: int | None) -> str | None:
    """Format Unix seconds as ISO 8601 UTC, or return None for None."""
    if seconds is None:
        return None
    return to_iso(datetime.fromtimestamp(seconds, UTC))
