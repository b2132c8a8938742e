"""Deadlines that stretch with the machine's load, so that the suite passes on a busy host.

A deadline in a test only bounds a failure (the test waits on an event and gives up at the deadline)
or bounds how late something may happen. Either way a loaded host makes everything slower by about
its run queue per CPU: ``scaled`` multiplies a deadline by ``FACENAS_TEST_TIME_FACTOR`` when set,
else by the current one-minute load per CPU (never less than 1).
"""

from __future__ import annotations

import os

ENV = "FACENAS_TEST_TIME_FACTOR"


def time_factor() -> float:
    """The factor deadlines are multiplied by now (at least 1)."""
    configured = os.environ.get(ENV)
    if configured:
        return max(1.0, float(configured))
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def scaled(seconds: float) -> float:
    """``seconds`` stretched by the machine's load (see the module docstring)."""
    return seconds * time_factor()
