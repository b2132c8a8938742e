"""What the searcher is waiting for now: the store, or an objective service none of whose replicas
answers. Outages pause a search; they do not fail it (up to :attr:`OutagePolicy.patience_s`).

One :class:`Outages` per searcher: while a dependency is out, ``facenas_search_waiting{dependency}`` is
1, :meth:`Outages.describe` says since when (``GetSearch`` shows it), and the wait is logged when it
begins and ends.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from facenas.errors import ConfigError
from facenas.search import metrics

log = logging.getLogger(__name__)

#: Default patience with an outage: a search waits this long for the store or a service to come back.
DEFAULT_PATIENCE_S = 1800.0


@dataclass(frozen=True)
class OutagePolicy:
    """How long, and how often, to try a dependency that does not answer."""

    patience_s: float = DEFAULT_PATIENCE_S
    first_backoff_s: float = 0.25
    max_backoff_s: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if not self.patience_s >= 0:
            problems.append(f"outage patience {self.patience_s} s must be >= 0")
        if not 0 < self.first_backoff_s <= self.max_backoff_s:
            problems.append(f"backoff {self.first_backoff_s}..{self.max_backoff_s} s must be > 0 and ordered")
        if problems:
            raise ConfigError(problems)

    def backoff(self, attempt: int) -> float:
        """The pause before try ``attempt`` + 1 (exponential, capped)."""
        return float(min(self.max_backoff_s, self.first_backoff_s * 2 ** min(attempt, 30)))


@dataclass(frozen=True)
class Outage:
    dependency: str
    since: float  # time.time()
    reason: str

    def describe(self, now: float | None = None) -> str:
        waited = (now or time.time()) - self.since
        return f"waiting for {self.dependency} ({waited:.0f} s: {self.reason})"


class Outages:
    """Dependencies that are out now (thread-safe; several callers may wait for the same one)."""

    def __init__(self) -> None:
        self._out: dict[str, Outage] = {}
        self._waiters: dict[str, int] = {}
        self._lock = threading.Lock()

    def begin(self, dependency: str, reason: str) -> Outage:
        """Wait for ``dependency``: the outage this waiter joins (a new one if none is on)."""
        with self._lock:
            self._waiters[dependency] = self._waiters.get(dependency, 0) + 1
            joined = self._out.get(dependency)
            if joined is not None:
                return joined
            joined = self._out[dependency] = Outage(dependency, time.time(), reason[:500])
        metrics.WAITING.labels(dependency).set(1)
        log.warning("waiting for a dependency", extra={"dependency": dependency, "reason": reason[:500]})
        return joined

    def ongoing(self, outage: Outage) -> bool:
        """Whether ``outage`` is still on (no waiter has seen its dependency answer since)."""
        with self._lock:
            return self._out.get(outage.dependency) is outage

    def end(self, dependency: str, recovered: bool) -> None:
        """One waiter stops waiting; ``recovered`` when the dependency answered again (clears it)."""
        with self._lock:
            self._waiters[dependency] = max(0, self._waiters.get(dependency, 0) - 1)
            outage = self._out.get(dependency)
            if outage is None or (not recovered and self._waiters[dependency] > 0):
                return
            del self._out[dependency]
        metrics.WAITING.labels(dependency).set(0)
        log.info(
            "dependency back" if recovered else "stopped waiting for a dependency",
            extra={"dependency": dependency, "waited_s": round(time.time() - outage.since, 3)},
        )

    def current(self) -> list[Outage]:
        with self._lock:
            return sorted(self._out.values(), key=lambda o: o.since)

    def describe(self) -> str:
        """``""`` when nothing is out, else e.g. ``waiting for store (12 s: connection refused)``."""
        now = time.time()
        return "; ".join(o.describe(now) for o in self.current())
