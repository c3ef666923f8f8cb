"""Named points where a crash test can kill the process.

The exactly-once promise is proved by killing ``tc`` at each step of the
trigger protocol and of a status-file write. ``TC_FAILPOINT=NAME`` makes the
process send itself SIGKILL when it reaches the point ``NAME``;
``TC_FAILPOINT=NAME:N`` does so the Nth time. Unset, as in production, a
point costs one comparison.

Points: ``trigger.claimed``, ``trigger.sending``, ``trigger.received``,
``trigger.recorded``, ``status.renaming``, ``poll.recorded``.
"""

from __future__ import annotations

import os
import signal

_SETTING = os.environ.get("TC_FAILPOINT", "")
_NAME, _, _COUNT = _SETTING.partition(":")
_remaining = int(_COUNT) if _COUNT.isdigit() else 1


def reach(name: str) -> None:
    """Kill the process with SIGKILL if ``name`` is the configured failpoint."""
    global _remaining
    if not _NAME or name != _NAME:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
