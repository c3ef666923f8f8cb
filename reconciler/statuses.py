"""OpenAI batch status values, shared by the adapter and the domain.

Kept apart from the adapter so that reading the state database (``tc
status``) does not import the HTTP stack.
"""

from __future__ import annotations

TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"completed", "failed", "cancelled", "expired"}
)
FAILED_STATUSES: frozenset[str] = frozenset({"failed", "cancelled", "expired"})
KNOWN_STATUSES: frozenset[str] = TERMINAL_STATUSES | {
    "validating",
    "in_progress",
    "finalizing",
    "cancelling",
}
