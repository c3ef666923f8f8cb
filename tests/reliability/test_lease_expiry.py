"""A trigger lease that runs out while its request still waits to be sent.

A claim's lease lasts ``http_timeout + 30 s`` from the claim. All triggers of
a cycle are claimed at once, but their requests then queue for the HTTP
pool's concurrency slots, and that wait does not count towards the timeout.
When Keboola responds slowly, the last requests leave after their leases have
run out, and a second process that looks at that moment takes the claims
over, finds nothing in the job search and sends the triggers again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import pytest
from reliability_support import Workspace, scenario, terminal

StartWorkspace = Callable[..., Workspace]

pytestmark = pytest.mark.slow

HTTP_TIMEOUT = 2.0
POST_LATENCY = 1.5
# 24 requests one after the other, 1.5 s each: the last ones leave about
# 33 s and 34.5 s after the claims, after the 32 s lease.
JOBS = 24


def _leases(ws: Workspace) -> list[float]:
    return [
        datetime.fromisoformat(t["lease_until"]).timestamp()
        for t in ws.triggers().values()
        if t["state"] == "sending" and t["lease_until"]
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
    while not ws.database.exists() or len(_leases(ws)) < JOBS:
        assert time.monotonic() < deadline, "the first tc apply claimed nothing"
        time.sleep(0.2)
    time.sleep(max(min(_leases(ws)) - time.time(), 0) + 0.3)
    second = ws.apply()
    first.communicate(timeout=120)

    assert second.returncode in (0, 1), second.describe()
    per_job = ws.keboola_jobs_per_job()
    assert {name: n for name, n in per_job.items() if n != 1} == {}
