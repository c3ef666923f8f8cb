"""The operations behind the commands, one function each.

The CLI parses arguments, calls one of these and renders the result. Nothing
here prints or imports typer or rich, so every operation can be used and
tested without a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import TCError
from reconciler.settings import Settings
from reconciler.status_document import build_document
from reconciler.store import EventRow, Store

if TYPE_CHECKING:
    from reconciler.report import CycleReport
    from reconciler.secrets import SecretResolver
    from reconciler.spec import JobFile

# The cycle pulls in asyncio, httpx, pydantic and cryptography. The
# operations that need it import it themselves, so `tc status` starts
# without them.


class UnknownJobError(TCError):
    """A command named a job that the state database does not have."""


def apply(
    job_dir: Path,
    settings: Settings,
    *,
    dry_run: bool = False,
    allow_empty: bool = False,
    due_only: bool = False,
) -> CycleReport:
    """Run one cycle over ``job_dir``, or with ``dry_run`` compute its plan only.

    A cycle whose inputs match those of the last cycle that left nothing to
    do is not run; its report comes from the database (see ``settled``).
    """
    if dry_run:
        from reconciler.cycle import Cycle

        cycle = Cycle(job_dir, settings, due_only=due_only)
        return cycle.plan(allow_empty=allow_empty)
    from reconciler.settled import settled_report

    store = Store.open(settings.state_dir)
    try:
        report = settled_report(job_dir, settings, store)
        if report is not None:
            return report
        import asyncio

        from reconciler.cycle import Cycle

        cycle = Cycle(
            job_dir, settings, resolver=resolver_for(store), due_only=due_only
        )
        return asyncio.run(cycle.run(store, allow_empty=allow_empty))
    finally:
        store.close()


def resolver_for(store: Store) -> SecretResolver:
    """Return the resolver of a cycle: ``secret:`` references use the store's vault."""
    from reconciler.secrets import SecretResolver, SecretVault

    return SecretResolver(SecretVault(store))


def validate(paths: Sequence[Path], settings: Settings) -> list[JobFile]:
    """Validate job files without the database or secrets."""
    from reconciler.catalog import load_paths

    return load_paths(paths, settings)


@dataclass
class JobView:
    """A job as ``tc status`` shows it.

    ``document`` holds the status-file keys; ``extra`` the keys that only
    ``tc status`` shows (check times, the job file's path).
    """

    document: dict[str, Any]
    extra: dict[str, Any]
    events: list[EventRow]

    def as_mapping(self) -> dict[str, Any]:
        """Return the status-file keys followed by the extra keys."""
        return {**self.document, **self.extra}


def status(
    settings: Settings, names: Sequence[str] = (), *, events: int = 15
) -> list[JobView]:
    """Return the jobs of the state database, all or the named ones.

    The recent events are read only when exactly one job is named, which is
    when ``tc status NAME`` shows them.

    Raises:
        UnknownJobError: a named job is not in the state database.
        StoreError: there is no state database yet.
    """
    # The quick check reads every page, also the events table's (up to 200
    # events a job), of which tc status reads one job's at most. A damaged
    # page still fails the read that meets it.
    store = Store.open(settings.state_dir, create=False, check=False)
    try:
        jobs = store.jobs(with_spec=False)
        missing = [n for n in names if n not in jobs]
        if missing:
            known = ", ".join(sorted(jobs)) or "none"
            msg = (
                f"no job named {', '.join(missing)} in the state database "
                f"(known jobs: {known})"
            )
            raise UnknownJobError(msg)
        batches = store.all_batches()
        triggers = store.current_triggers()
        views = []
        for name in names or sorted(jobs):
            row = jobs[name]
            document = build_document(row, batches.get(name, []), triggers.get(name))
            extra = {
                "path": row.path,
                "last_checked_at": row.last_checked_at,
                "next_check_at": row.next_check_at,
            }
            history = store.events(name, events) if len(names) == 1 else []
            views.append(JobView(document, extra, history))
        return views
    finally:
        store.close()


def rerun(settings: Settings, name: str) -> str | None:
    """Arm a new trigger for a job, superseding the current one.

    Returns:
        The id of the superseded trigger, or None when none was armed.

    Raises:
        UnknownJobError: the job is not in the state database.
    """
    store = Store.open(settings.state_dir, create=False)
    try:
        row = store.job(name)
        if row is None:
            msg = f"no job named {name} in the state database; run `tc apply` first"
            raise UnknownJobError(msg)
        current = store.trigger(row.trigger_id) if row.trigger_id else None
        if current is not None and current.state in ("sending", "unknown"):
            msg = (
                f"trigger {current.id} of job {name} is {current.state}: whether "
                "Keboola created its job is not known yet; run `tc apply` until it "
                "is accepted or rejected, then rerun"
            )
            raise TCError(msg)
        previous = store.disarm_trigger(name, rerun=True)
        what = f"trigger {previous} superseded" if previous else "no trigger was armed"
        store.add_event(name, "trigger", f"tc rerun: {what}; a new trigger is armed")
        return previous
    finally:
        store.close()
