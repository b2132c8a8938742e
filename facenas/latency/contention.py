"""What the host did to a latency measurement: the measuring thread's CPU share and the run queue.

A low ``cv`` does not prove a quiet host: a neighbour competing for our core during every round shifts
every round alike. So each timed round also records

* the CPU time the measuring code got against the wall time that passed (``cpu_fraction``). With
  ``intra_op_threads=1`` ONNX Runtime runs the graph on the calling thread, whose CPU clock
  (``CLOCK_THREAD_CPUTIME_ID``) advances only while it is on a CPU: on a quiet host the fraction is about
  1, a runnable neighbour sharing the core (or the hypervisor taking the vCPU away) lowers it. With more
  intra-op threads the process CPU clock is divided by ``threads`` x wall time; idle pool threads lower it
  too, so there it is only indicative;
* the other runnable tasks on the host after the round (``procs_running`` of ``/proc/stat``, minus the
  measuring thread), the evidence quoted when a measurement is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_PROC_STAT = Path("/proc/stat")

# Clocks, module attributes so that tests can substitute fakes.
_wall_ns: Callable[[], int] = time.perf_counter_ns
_thread_cpu_ns: Callable[[], int] = time.thread_time_ns
_process_cpu_ns: Callable[[], int] = time.process_time_ns


def procs_running() -> int | None:
    """Return the host's runnable tasks now (``procs_running`` of /proc/stat), None where unknown."""
    try:
        with _PROC_STAT.open("rb") as f:
            for line in f:
                if line.startswith(b"procs_running "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class RoundUsage:
    """One timed round: wall and CPU nanoseconds, and other runnable tasks seen after it (None: unknown)."""

    wall_ns: int
    cpu_ns: int
    neighbours: int | None


class RoundMeter:
    """Measures :class:`RoundUsage` around a round; ``threads`` is the intra-op thread count."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._cpu = _thread_cpu_ns if threads == 1 else _process_cpu_ns
        self._start = (0, 0)

    def start(self) -> None:
        """Mark the beginning of a round."""
        self._start = (_wall_ns(), self._cpu())

    def stop(self) -> RoundUsage:
        """Return the usage since :meth:`start` (CPU time already divided by the thread count)."""
        wall, cpu = _wall_ns() - self._start[0], self._cpu() - self._start[1]
        running = procs_running()
        return RoundUsage(wall, cpu // self._threads, None if running is None else max(running - 1, 0))


@dataclass(frozen=True)
class Usage:
    """What the host did to one attempt (all its timed rounds)."""

    cpu_fraction: float
    round_cpu_fractions: tuple[float, ...]
    neighbours: tuple[int, ...]

    @classmethod
    def of(cls, rounds: Sequence[RoundUsage]) -> Usage:
        """Aggregate rounds: the fraction is total CPU over total wall time (1.0 if no time passed)."""
        wall = sum(r.wall_ns for r in rounds)
        cpu = sum(r.cpu_ns for r in rounds)
        return cls(
            cpu_fraction=_fraction(cpu, wall),
            round_cpu_fractions=tuple(_fraction(r.cpu_ns, r.wall_ns) for r in rounds),
            neighbours=tuple(r.neighbours for r in rounds if r.neighbours is not None),
        )

    def mean_neighbours(self) -> float | None:
        """Return the mean of the neighbour samples, None without samples."""
        return sum(self.neighbours) / len(self.neighbours) if self.neighbours else None


def _fraction(cpu_ns: int, wall_ns: int) -> float:
    """Return cpu / wall, clipped to [0, 1] (clock granularity can overshoot slightly)."""
    return 1.0 if wall_ns <= 0 else min(max(cpu_ns / wall_ns, 0.0), 1.0)


def contention_reasons(usage: Usage, min_cpu_fraction: float, cpus: int) -> list[str]:
    """Return why an attempt counts as contended (empty: it does not), quoting the run queue."""
    if usage.cpu_fraction >= min_cpu_fraction:
        return []
    mean = usage.mean_neighbours()
    queue = "" if mean is None else f"; {mean:.1f} other runnable tasks on {cpus} usable CPUs"
    return [f"cpu_fraction {usage.cpu_fraction:.2f} < {min_cpu_fraction:.2f}{queue}"]
