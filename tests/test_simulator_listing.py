"""The simulator's list endpoint with fixed creation times, at scale."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from reconciler.simulator import Simulator

KEY = "sk-list"
FOREVER = [{"status": "in_progress", "seconds": 10**9}, {"status": "completed"}]


def _scenario(count: int) -> dict[str, Any]:
    batches = {
        f"batch_{i}": {"script": FOREVER, "created_at": 1_700_000_000 + i}
        for i in range(count)
    }
    return {
        "openai": {"api_keys": [KEY], "batches": batches},
        "keboola": {"tokens": ["t"], "configurations": []},
    }


def test_created_at_is_fixed(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(_scenario(3))
    headers = {"Authorization": f"Bearer {KEY}"}
    body = httpx.get(f"{sim.url}/v1/batches/batch_1", headers=headers).json()
    assert body["created_at"] == 1_700_000_001
    assert body["status"] == "in_progress"


def test_pages_walk_all_newest_first(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(_scenario(2500))
    headers = {"Authorization": f"Bearer {KEY}"}
    seen: list[int] = []
    after: str | None = None
    pages = 0
    with httpx.Client(headers=headers) as client:
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["after"] = after
            page = client.get(f"{sim.url}/v1/batches", params=params).json()
            pages += 1
            seen.extend(b["created_at"] for b in page["data"])
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
    assert pages == 25
    assert len(seen) == 2500
    assert seen == sorted(seen, reverse=True)
