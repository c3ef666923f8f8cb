"""A trigger whose request waits long for an HTTP slot keeps its lease.

All triggers of a cycle are claimed at once, but their requests then queue
for the HTTP pool's concurrency slots. When Keboola responds slowly, the last
requests leave more than ``http_timeout + 30 s`` after their claims. A second
process that looks once the first leases would have run out must still leave
those claims alone, or it finds nothing in the job search and sends the
triggers again.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from reliability_support import LEASE_MARGIN_SECONDS, Workspace, scenario, terminal

StartWorkspace = Callable[..., Workspace]

pytestmark = pytest.mark.slow

HTTP_TIMEOUT = 2.0
POST_LATENCY = 1.5
# 24 requests one after the other, 1.5 s each: the last ones leave about
# 33 s and 34.5 s after the claims, after the 32 s lease.
JOBS = 24


def _claim_times(ws: Workspace) -> list[float]:
    """Return when each trigger was claimed, none before the schema exists."""
    try:
        triggers = ws.triggers()
    except (FileNotFoundError, sqlite3.OperationalError):
        return []
    return [
        datetime.fromisoformat(t["claimed_at"]).timestamp() for t in triggers.values()
    ]


def test_lease_covers_slot_wait(workspace: StartWorkspace) -> None:
    latency = {
        "service": "keboola",
        "method": "POST",
        "path": "^/jobs$",
        "latency": POST_LATENCY,
    }
    ws = workspace(
        scenario({f"batch_{i:03d}": terminal() for i in range(JOBS)}, faults=[latency]),
        {
            "TC_CONCURRENCY": "1",
            "TC_HTTP_TIMEOUT": str(HTTP_TIMEOUT),
            "TC_TRIGGER_LOOKUP_GRACE": "1",
        },
    )
    names = [f"job-{i:03d}" for i in range(JOBS)]
    for i, name in enumerate(names):
        ws.write_job(name, [f"batch_{i:03d}"])

    first = ws.start_apply()
    deadline = time.monotonic() + 30
    while len(_claim_times(ws)) < JOBS:
        assert time.monotonic() < deadline, "the first tc apply claimed nothing"
        time.sleep(0.2)
    # Start the second process once the first leases, counted from the
    # claims, would have run out.
    first_lease_end = min(_claim_times(ws)) + HTTP_TIMEOUT + LEASE_MARGIN_SECONDS
    time.sleep(max(first_lease_end - time.time(), 0) + 0.3)
    second = ws.apply()
    first.communicate(timeout=120)

    assert second.returncode in (0, 1), second.describe()
    per_job = ws.keboola_jobs_per_job()
    assert {name: n for name, n in per_job.items() if n != 1} == {}
