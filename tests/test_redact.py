"""Secrets and parts of them are removed from text that reaches a message."""

from __future__ import annotations

from reconciler.http_pool import redact

TOKEN = "123-456-abcdefghijklmnopqrstuvwxyz0123"


def test_whole_secret_replaced() -> None:
    assert redact(f"bad token {TOKEN} here", [TOKEN]) == "bad token *** here"


def test_partial_echo_replaced() -> None:
    text = f"Incorrect API key provided: {TOKEN[:20]}...."
    cleaned = redact(text, [TOKEN])
    assert TOKEN[:20] not in cleaned
    assert TOKEN[:8] not in cleaned
    assert cleaned.startswith("Incorrect API key provided: ***")


def test_middle_fragment_replaced() -> None:
    cleaned = redact(f"x{TOKEN[10:22]}y", [TOKEN])
    assert cleaned == "x***y"


def test_short_common_runs_kept() -> None:
    assert redact("job 123-456 failed", [TOKEN]) == "job 123-456 failed"
