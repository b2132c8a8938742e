"""How many CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""

from __future__ import annotations

import math
import os
from pathlib import Path

_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _quota(cpu_max: Path) -> int | None:
    """Whole CPUs allowed by ``cpu.max`` (``"200000 100000"`` -> 2), None without a quota."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 file, or "max 100000"
        return None


def usable_cpus(cpu_max: Path = _CPU_MAX) -> int:
    """CPUs this process may run on: the affinity mask, capped by the cgroup's CPU quota when set."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _quota(cpu_max)
    return max(1, min(affinity, quota) if quota is not None else affinity)
