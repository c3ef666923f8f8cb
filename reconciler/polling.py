"""Polling OpenAI batches: each wanted batch fetched once per cycle.

The cycle collects the batches that are due under each endpoint and key; a
batch that several jobs list is asked for once. Every request goes through
the pool's limiter, so the number in flight never exceeds the concurrency
setting, whatever the number of keys.

Two strategies fetch them:

- ``get``: one ``GET /batches/{id}`` per batch, all concurrently.
- ``list``: pages of ``GET /batches`` (100 batches each, newest first) while
  paging is cheaper than the single GETs it saves, then single GETs for the
  batches no page contained. Paging stops at the last page, when the pages
  have gone past the oldest batch still missing, when the batches still
  missing are fewer than the pages it would take to reach them, or when the
  pages are not in newest-first order.

``auto`` uses ``list`` for an account with at least ``LIST_MODE_MINIMUM``
batches to fetch and ``get`` otherwise. Correctness never depends on the
choice: a batch that paging does not find is fetched on its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from reconciler.errors import ApiError, NotFoundError
from reconciler.http_pool import HttpPool
from reconciler.openai_api import MAX_PAGE_SIZE, Batch, OpenAIClient
from reconciler.retrying import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Account:
    """The OpenAI endpoint and key that batches are fetched with."""

    base_url: str
    api_key: str

    def __repr__(self) -> str:
        # The key must never reach a log line or a traceback.
        return f"Account(base_url={self.base_url!r}, api_key='***')"


@dataclass(frozen=True)
class PollFailure:
    """A batch that could not be fetched, with the message to show on its jobs."""

    message: str


PollResult = Batch | PollFailure


Strategy = Literal["auto", "list", "get"]

# Below this many batches under one key, single GETs are cheap enough.
LIST_MODE_MINIMUM = 20

# Current OpenAI batch ids are "batch_" and 32 hex digits, of which the first
# 8 are the creation time in Unix seconds (seen on published ids; OpenAI does
# not document it). Used only as a hint for when to stop paging.
_TIMED_ID = re.compile(r"batch_([0-9a-f]{8})[0-9a-f]{24}")


def created_at_hint(batch_id: str) -> int | None:
    """Return the creation time an OpenAI batch id encodes, if it has the format."""
    match = _TIMED_ID.fullmatch(batch_id)
    return int(match.group(1), 16) if match else None


class Poller:
    """Fetches batches for one cycle.

    Args:
        pool: the HTTP pool, whose limiter caps requests in flight.
        policy: the retry policy of each request.
        strategy: ``auto``, ``list`` or ``get``; see the module docstring.
        workers: single GETs in flight per account; the pool's limiter caps
            the total over all accounts.
    """

    def __init__(
        self,
        pool: HttpPool,
        policy: RetryPolicy,
        strategy: Strategy = "auto",
        *,
        workers: int = 10,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._strategy = strategy
        self._workers = max(1, workers)
        self.requests = 0

    async def poll(
        self, wanted: Mapping[Account, Mapping[str, int | None]]
    ) -> dict[Account, dict[str, PollResult]]:
        """Fetch every wanted batch once.

        Args:
            wanted: for each account, the batch ids to fetch with the creation
                time of each where known (Unix seconds), else None.

        Returns:
            For each account, each batch id's ``Batch`` or ``PollFailure``.
        """
        accounts = [
            self._poll_account(account, dict(batches))
            for account, batches in wanted.items()
        ]
        results = await asyncio.gather(*accounts)
        return dict(zip(wanted, results, strict=True))

    async def _poll_account(
        self, account: Account, wanted: dict[str, int | None]
    ) -> dict[str, PollResult]:
        client = OpenAIClient(
            self._pool,
            base_url=account.base_url,
            api_key=account.api_key,
            policy=self._policy,
        )
        found: dict[str, PollResult] = {}
        use_list = self._strategy == "list" or (
            self._strategy == "auto" and len(wanted) >= LIST_MODE_MINIMUM
        )
        if use_list:
            await self._page(client, wanted, found)
        missing = [batch_id for batch_id in wanted if batch_id not in found]
        if missing:
            log.info("Polling %d batches one by one", len(missing))
            # A few workers share one iterator: ten thousand coroutines each
            # holding its request and retry state cost about 10 KB per batch.
            pending = iter(missing)

            async def work() -> None:
                for batch_id in pending:
                    await self._fetch(client, batch_id, found)

            await asyncio.gather(
                *(work() for _ in range(min(self._workers, len(missing))))
            )
        return found

    async def _page(
        self,
        client: OpenAIClient,
        wanted: dict[str, int | None],
        found: dict[str, PollResult],
    ) -> None:
        """Fill ``found`` from list pages for as long as paging pays."""
        hints = {
            batch_id: created if created is not None else created_at_hint(batch_id)
            for batch_id, created in wanted.items()
        }
        pages = 0
        after: str | None = None
        previous_oldest: int | None = None
        while True:
            try:
                page, has_more = await client.list_batches(
                    limit=MAX_PAGE_SIZE, after=after
                )
            except ApiError as error:
                log.warning(
                    "Listing batches failed (%s); fetching them one by one",
                    error.message,
                )
                return
            finally:
                self.requests += 1
            pages += 1
            for batch in page:
                if batch.id in wanted and batch.id not in found:
                    found[batch.id] = batch
            missing = [b for b in wanted if b not in found]
            if not missing or not has_more or not page:
                return
            times = [b.created_at for b in page if b.created_at is not None]
            if times != sorted(times, reverse=True) or (
                previous_oldest is not None and times and times[0] > previous_oldest
            ):
                log.warning("Batch pages are not newest first; paging stops")
                return
            if not times:
                return
            newest, oldest = times[0], times[-1]
            previous_oldest = oldest
            known = [hints[b] for b in missing if hints[b] is not None]
            if known and oldest < min(t for t in known if t is not None):
                # The pages went past every missing batch with a known time.
                return
            if known and not _paging_pays(newest, oldest, len(page), known, missing):
                return
            after = page[-1].id

    async def _fetch(
        self, client: OpenAIClient, batch_id: str, found: dict[str, PollResult]
    ) -> None:
        self.requests += 1
        found[batch_id] = await _fetch(client, batch_id)


def _paging_pays(
    newest: int,
    oldest: int,
    count: int,
    known: list[int | None],
    missing: list[str],
) -> bool:
    """Estimate whether paging on reaches the missing batches in fewer requests
    than fetching them one by one.

    The estimate assumes that batches were created at the rate the last page
    shows.
    """
    target = min(t for t in known if t is not None)
    span = max(newest - oldest, 1)
    per_second = count / span
    pages_left = (oldest - target) * per_second / MAX_PAGE_SIZE
    return pages_left + 1 < len(missing)


async def _fetch(client: OpenAIClient, batch_id: str) -> PollResult:
    try:
        return await client.get_batch(batch_id)
    except NotFoundError as error:
        return PollFailure(
            f"{error.message}; check the batch id and that the key belongs to "
            "the batch's OpenAI project"
        )
    except ApiError as error:
        return PollFailure(error.message)
    except Exception as error:  # one batch must never stop the cycle
        log.exception("Unexpected error polling batch %s", batch_id)
        return PollFailure(f"unexpected error: {type(error).__name__}")
