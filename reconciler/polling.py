"""Polling OpenAI batches: each wanted batch fetched once per cycle.

The cycle collects the batches that are due under each endpoint and key; a
batch that several jobs list is asked for once. Every request goes through
the pool's limiter, so the number in flight never exceeds the concurrency
setting, whatever the number of keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.errors import ApiError, NotFoundError
from reconciler.http_pool import HttpPool
from reconciler.openai_api import Batch, OpenAIClient
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


class Poller:
    """Fetches batches for one cycle."""

    def __init__(self, pool: HttpPool, policy: RetryPolicy) -> None:
        self._pool = pool
        self._policy = policy

    async def poll(
        self, wanted: Mapping[Account, Iterable[str]]
    ) -> dict[Account, dict[str, PollResult]]:
        """Fetch every wanted batch once, concurrently.

        Returns:
            For each account, each batch id's ``Batch`` or ``PollFailure``.
        """
        results: dict[Account, dict[str, PollResult]] = {}
        calls = []
        for account, batch_ids in wanted.items():
            client = OpenAIClient(
                self._pool,
                base_url=account.base_url,
                api_key=account.api_key,
                policy=self._policy,
            )
            found = results.setdefault(account, {})
            for batch_id in dict.fromkeys(batch_ids):
                calls.append(_fetch(client, batch_id, found))
        if calls:
            log.info("Polling %d batches", len(calls))
            await asyncio.gather(*calls)
        return results


async def _fetch(
    client: OpenAIClient, batch_id: str, found: dict[str, PollResult]
) -> None:
    try:
        found[batch_id] = await client.get_batch(batch_id)
    except NotFoundError as error:
        found[batch_id] = PollFailure(
            f"{error.message}; check the batch id and that the key belongs to "
            "the batch's OpenAI project"
        )
    except ApiError as error:
        found[batch_id] = PollFailure(error.message)
    except Exception as error:  # one batch must never stop the cycle
        log.exception("Unexpected error polling batch %s", batch_id)
        found[batch_id] = PollFailure(f"unexpected error: {type(error).__name__}")
