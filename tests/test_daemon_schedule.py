"""When the daemon wakes: per-job due times read from a real state database.

The start of the last cycle is passed in, so every due time is exact and no
test sleeps or reads the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.schedule import EARLIEST, Due, Snapshot, next_due
from reconciler.settings import Settings
from reconciler.store import Store
from reconciler.timeutil import to_iso

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SETTINGS = Settings(keboola_poll_seconds=15, trigger_lookup_grace=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path)
    yield opened
    opened.close()


def add_job(
    store: Store,
    name: str,
    *,
    interval: int = 120,
    statuses: tuple[str | None, ...] = (None,),
    next_check: float | None = None,
    suspend: bool = False,
    spec: bool = True,
    **values: Any,
) -> None:
    """Insert a job whose batches have ``statuses``, due at ``T0 + next_check``."""
    ids = [f"batch_{name}_{i}" for i in range(len(statuses))]
    document = {"batch_ids": ids, "poll_interval_seconds": interval, "suspend": suspend}
    store.insert_job(
        name,
        path=f"jobs.d/{name}.yaml",
        revision="r1",
        spec=document if spec else None,
        spec_revision="r1" if spec else None,
        status="active",
        next_check_at=None if next_check is None else to_iso(at(next_check)),
        **values,
    )
    store.set_batch_ids(name, ids)
    for batch_id, status in zip(ids, statuses, strict=True):
        store.update_batch(name, batch_id, status=status)


def add_trigger(store: Store, job: str, state: str, **values: Any) -> None:
    """Claim a trigger for ``job`` in ``state``, sent at T0."""
    trigger_id = f"tct-{job}"
    store.claim_trigger(
        job,
        {
            "id": trigger_id,
            "batch_ids": [],
            "target": {},
            "state": state,
            "claimed_at": to_iso(T0),
            "sent_at": to_iso(T0),
            "parameters": {},
        },
    )
    if values:
        store.update_trigger(trigger_id, **values)


def due(store: Store, last_cycle: datetime | None = None) -> Due | None:
    return next_due(Snapshot.read(store), SETTINGS, last_cycle=last_cycle)


def test_new_job_due_now(store: Store) -> None:
    """A job never polled is due at once."""
    add_job(store, "fresh")

    result = due(store)

    assert result is not None
    assert (result.at, result.job, result.reason) == (EARLIEST, "fresh", "poll")


def test_each_job_keeps_its_interval(store: Store) -> None:
    """Two jobs polled together wake the daemon at their own next checks."""
    add_job(store, "fast", interval=30, next_check=30)
    add_job(store, "slow", interval=300, next_check=300)

    first = due(store, last_cycle=T0)
    assert first is not None
    assert (first.at, first.job) == (at(30), "fast")

    store.update_job("fast", next_check_at=to_iso(at(60)))
    second = due(store, last_cycle=at(30))
    assert second is not None
    assert (second.at, second.job) == (at(60), "fast")

    store.update_job("fast", next_check_at=to_iso(at(330)))
    third = due(store, last_cycle=at(270))
    assert third is not None
    assert (third.at, third.job) == (at(300), "slow")


def test_idle_jobs_wake_nothing(store: Store) -> None:
    """Suspended, specless and settled jobs need no wake-up."""
    add_job(store, "paused", suspend=True)
    add_job(store, "broken", spec=False)
    add_job(store, "rejected", statuses=("completed",))
    add_trigger(store, "rejected", "rejected")
    add_job(store, "finished", statuses=("failed",))
    add_trigger(store, "finished", "accepted", keboola_finished=True)

    assert due(store) is None


def test_terminal_batches_due_for_trigger(store: Store) -> None:
    """All batches terminal and no trigger: due now, or after a rate limit."""
    add_job(store, "done", statuses=("completed", "expired"))
    first = due(store)
    assert first is not None
    assert (first.at, first.reason) == (EARLIEST, "trigger")

    store.update_job("done", trigger_not_before=to_iso(at(45)))
    result = due(store)
    assert result is not None
    assert (result.at, result.reason) == (at(45), "trigger")


def test_leased_trigger_due_at_lease_end(store: Store) -> None:
    """A trigger being sent is looked at again when its lease runs out."""
    add_job(store, "sending", statuses=("completed",))
    add_trigger(store, "sending", "sending", lease_until=to_iso(at(40)))

    result = due(store, last_cycle=T0)

    assert result is not None
    assert (result.at, result.reason) == (at(40), "lease")


def test_unknown_trigger_searched_until_grace(store: Store) -> None:
    """An unknown trigger is searched every keboola_poll_seconds and at grace end."""
    add_job(store, "lost", statuses=("completed",))
    add_trigger(store, "lost", "unknown")

    early = due(store, last_cycle=T0)
    late = due(store, last_cycle=at(50))

    assert early is not None
    assert (early.at, early.reason) == (at(15), "lookup")
    assert late is not None
    assert late.at == at(60)


def test_keboola_job_followed(store: Store) -> None:
    """An accepted trigger's Keboola job is read every keboola_poll_seconds."""
    add_job(store, "running", statuses=("completed",))
    add_trigger(
        store,
        "running",
        "accepted",
        keboola_finished=False,
        keboola_checked_at=to_iso(at(10)),
    )

    result = due(store, last_cycle=at(10))

    assert result is not None
    assert (result.at, result.reason) == (at(25), "keboola")


@pytest.mark.parametrize(
    "next_check",
    [pytest.param(None, id="never-polled"), pytest.param(-5, id="overdue")],
)
def test_unhandled_due_moves_past_cycle(store: Store, next_check: int | None) -> None:
    """A job the last cycle could not poll waits one interval, never spins."""
    add_job(store, "nosecret", interval=60, next_check=next_check)

    result = due(store, last_cycle=at(1))

    assert result is not None
    assert result.at == at(61)


def test_due_after_cycle_start_kept(store: Store) -> None:
    """A moment after the last cycle's start is not moved."""
    add_job(store, "soon", interval=60, next_check=2)

    result = due(store, last_cycle=at(1))

    assert result is not None
    assert result.at == at(2)


def test_pending_poll_beats_later_trigger(store: Store) -> None:
    """The earliest moment among all jobs wins."""
    add_job(store, "waiting", next_check=90)
    add_job(
        store, "limited", statuses=("completed",), trigger_not_before=to_iso(at(20))
    )

    result = due(store, last_cycle=T0 - timedelta(seconds=1))

    assert result is not None
    assert (result.at, result.job) == (at(20), "limited")


def test_snapshot_counts(store: Store) -> None:
    """Jobs, batches and current triggers are counted for the gauges."""
    add_job(store, "a", statuses=("completed", None))
    add_job(store, "b", statuses=("completed",))
    add_trigger(store, "b", "accepted")
    store.update_job("b", status="completed")

    counts = Snapshot.read(store).counts()

    assert counts.jobs == {"active": 1, "completed": 1}
    assert counts.batches == {"completed": 2, "unknown": 1}
    assert counts.triggers == {"accepted": 1}
