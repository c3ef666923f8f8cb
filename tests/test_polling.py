"""Batch polling: single GETs and list-mode paging, against respx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx
import stamina

from reconciler.http_pool import HttpPool
from reconciler.openai_api import Batch
from reconciler.polling import (
    LIST_MODE_MINIMUM,
    Account,
    Poller,
    PollFailure,
    created_at_hint,
)
from reconciler.retrying import RetryPolicy
from reconciler.settings import Settings

BASE = "https://api.openai.com/v1"
ACCOUNT = Account(BASE, "sk-test-key")


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    stamina.set_testing(True, attempts=1)
    yield
    stamina.set_testing(False)


@pytest.fixture
async def pool(tmp_path: Any) -> AsyncIterator[HttpPool]:
    async with HttpPool(Settings(state_dir=tmp_path)) as shared:
        yield shared


def _batch(batch_id: str, created_at: int) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": "in_progress",
        "created_at": created_at,
        "request_counts": {"total": 1, "completed": 0, "failed": 0},
    }


class FakeOpenAI:
    """Serves GET /batches (pages, newest first) and GET /batches/{id}."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = sorted(batches, key=lambda b: b["created_at"], reverse=True)
        self.by_id = {b["id"]: b for b in self.batches}
        self.list_calls = 0
        self.get_calls = 0

    def install(self, router: respx.MockRouter) -> None:
        router.get(f"{BASE}/batches").mock(side_effect=self._list)
        router.get(url__regex=rf"{BASE}/batches/(?P<batch_id>[^/]+)$").mock(
            side_effect=self._get
        )

    def _list(self, request: httpx.Request) -> httpx.Response:
        self.list_calls += 1
        limit = int(request.url.params.get("limit", "20"))
        after = request.url.params.get("after")
        start = 0
        if after is not None:
            start = [b["id"] for b in self.batches].index(after) + 1
        page = self.batches[start : start + limit]
        body = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(self.batches),
        }
        return httpx.Response(200, json=body)

    def _get(self, request: httpx.Request, batch_id: str) -> httpx.Response:
        self.get_calls += 1
        if batch_id not in self.by_id:
            return httpx.Response(404, json={"error": {"message": "No batch found"}})
        return httpx.Response(200, json=self.by_id[batch_id])


def _ids(prefix: str, count: int, start: int) -> list[dict[str, Any]]:
    return [_batch(f"batch_{prefix}{i}", start + i) for i in range(count)]


async def test_few_batches_use_single_gets(pool: HttpPool) -> None:
    fake = FakeOpenAI(_ids("a", 5, 1000))
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        wanted = {b["id"]: None for b in fake.batches}
        results = await Poller(pool, RetryPolicy()).poll({ACCOUNT: wanted})
    assert fake.list_calls == 0
    assert fake.get_calls == 5
    assert all(isinstance(r, Batch) for r in results[ACCOUNT].values())


async def test_newest_batches_found_in_pages(pool: HttpPool) -> None:
    fake = FakeOpenAI(_ids("a", 250, 1000))
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        wanted = {b["id"]: b["created_at"] for b in fake.batches}
        poller = Poller(pool, RetryPolicy())
        results = await poller.poll({ACCOUNT: wanted})
    assert fake.list_calls == 3
    assert fake.get_calls == 0
    assert poller.requests == 3
    assert len(results[ACCOUNT]) == 250


async def test_pages_past_untracked_newer_batches(pool: HttpPool) -> None:
    tracked = _ids("t", 300, 1000)
    untracked = _ids("u", 1000, 5000)
    fake = FakeOpenAI(tracked + untracked)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        wanted = {b["id"]: b["created_at"] for b in tracked}
        poller = Poller(pool, RetryPolicy())
        results = await poller.poll({ACCOUNT: wanted})
    assert fake.get_calls == 0
    assert fake.list_calls == 13
    assert poller.requests <= len(tracked)
    assert set(results[ACCOUNT]) == set(wanted)


async def test_paging_stops_when_it_does_not_pay(pool: HttpPool) -> None:
    tracked = _ids("t", 30, 1000)
    untracked = _ids("u", 20000, 2000)
    fake = FakeOpenAI(tracked + untracked)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        wanted = {b["id"]: b["created_at"] for b in tracked}
        poller = Poller(pool, RetryPolicy())
        results = await poller.poll({ACCOUNT: wanted})
    assert fake.list_calls == 1
    assert fake.get_calls == 30
    assert poller.requests == 31
    assert set(results[ACCOUNT]) == set(wanted)


async def test_batch_missing_from_pages_fetched_alone(pool: HttpPool) -> None:
    fake = FakeOpenAI(_ids("a", 40, 1000))
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        wanted: dict[str, int | None] = {b["id"]: b["created_at"] for b in fake.batches}
        wanted["batch_gone"] = 1500
        results = await Poller(pool, RetryPolicy(), strategy="list").poll(
            {ACCOUNT: wanted}
        )
    assert fake.list_calls == 1
    assert fake.get_calls == 1
    assert isinstance(results[ACCOUNT]["batch_gone"], PollFailure)


async def test_get_strategy_never_lists(pool: HttpPool) -> None:
    fake = FakeOpenAI(_ids("a", LIST_MODE_MINIMUM + 5, 1000))
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        wanted = {b["id"]: None for b in fake.batches}
        await Poller(pool, RetryPolicy(), strategy="get").poll({ACCOUNT: wanted})
    assert fake.list_calls == 0
    assert fake.get_calls == LIST_MODE_MINIMUM + 5


async def test_failed_listing_falls_back(pool: HttpPool) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{BASE}/batches").mock(return_value=httpx.Response(500))
        get = router.get(url__regex=rf"{BASE}/batches/batch_.+").mock(
            side_effect=lambda request: httpx.Response(
                200, json=_batch(request.url.path.rsplit("/", 1)[1], 1)
            )
        )
        wanted = {f"batch_{i}": None for i in range(LIST_MODE_MINIMUM)}
        results = await Poller(pool, RetryPolicy()).poll({ACCOUNT: wanted})
    assert get.call_count == LIST_MODE_MINIMUM
    assert all(isinstance(r, Batch) for r in results[ACCOUNT].values())


def test_created_at_hint_decodes_current_ids() -> None:
    assert created_at_hint("batch_6a8b47c384748190bb22810ba35cb1dc") == 0x6A8B47C3
    assert created_at_hint("batch_abc123") is None
