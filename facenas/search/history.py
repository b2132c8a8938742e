"""What a search knows about its candidates: archs, the iteration that proposed each, the model its
evaluations are keyed by, measured values, and which are infeasible (a constraint rejected them) or
failed for good. Thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

from facenas.domain import Outcome
from facenas.search.snapshot import ObjectiveInfo
from facenas.space.hgnet import Arch


def violation(values: Mapping[str, float], objectives: Sequence[ObjectiveInfo]) -> str:
    """Why ``values`` break a constraint of ``objectives`` (``""`` when none is broken or measured)."""
    for objective in objectives:
        value = values.get(objective.name)
        if objective.constraint is None or value is None:
            continue
        lo, hi = objective.constraint
        if not lo <= value <= hi:
            return f"{objective.name} = {value:.4g} outside [{lo:g}, {hi:g}]"
    return ""


class SearchHistory:
    """Candidates in proposal order with their values; ``complete()`` gives the points fronts use."""

    def __init__(self, objectives: Sequence[ObjectiveInfo]) -> None:
        self.objectives = tuple(objectives)
        self.archs: dict[str, Arch] = {}
        self.iteration_of: dict[str, int] = {}
        self.model_of: dict[str, str] = {}  # the model part of the candidate's evaluation keys
        self.values: dict[str, dict[str, float]] = {}
        self.infeasible: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self._position: dict[str, int] = {}  # proposal order
        self._completed: list[str] = []  # as they became complete and feasible (see completed_since)
        self._logged: set[str] = set()
        self._revoked: set[str] = set()  # logged candidates that failed or turned infeasible later
        self._lock = threading.Lock()

    def add(self, arch: Arch, iteration: int, model: str) -> bool:
        """Record a candidate with the model fingerprint its evaluations are keyed by; False when it is
        already one (e.g. a resumed run proposing it again)."""
        with self._lock:
            if arch.archid in self.archs:
                return False
            self.archs[arch.archid] = arch
            self._position[arch.archid] = len(self._position)
            self.iteration_of[arch.archid] = iteration
            self.model_of[arch.archid] = model
            self.values.setdefault(arch.archid, {})
            self._log_if_complete(arch.archid)
            return True

    def set_value(self, archid: str, objective: str, value: float) -> None:
        with self._lock:
            self.values.setdefault(archid, {})[objective] = value
            self._log_if_complete(archid)

    def measured(self, archid: str) -> dict[str, float]:
        with self._lock:
            return dict(self.values.get(archid, {}))

    def check_constraints(self, archid: str) -> bool:
        """Mark ``archid`` infeasible when a measured value breaks a constraint; True when it does."""
        with self._lock:
            reason = violation(self.values.get(archid, {}), self.objectives)
            if reason:
                self.infeasible.setdefault(archid, reason)
                self._revoke(archid)
            return bool(reason)

    def completed_since(self, cursor: int) -> tuple[list[tuple[str, list[float], int]], int, int]:
        """The candidates that became complete and feasible (every objective measured, no constraint
        broken, not failed: as :meth:`complete` has them) after the first ``cursor``, as (archid, values
        in objective order, proposal position) -- those still so -- with the cursor to pass next time
        and how many such candidates failed or turned infeasible since (when that number changes,
        start again from cursor 0)."""
        with self._lock:
            names = [o.name for o in self.objectives]
            batch = [
                (a, [self.values[a][n] for n in names], self._position[a])
                for a in self._completed[cursor:]
                if a not in self.failed and a not in self.infeasible
            ]
            return batch, len(self._completed), len(self._revoked)

    def _log_if_complete(self, archid: str) -> None:
        """Log ``archid`` (lock held) the first time it is complete and feasible."""
        if archid in self._logged or archid not in self.archs:
            return
        if archid in self.failed or archid in self.infeasible:
            return
        values = self.values.get(archid, {})
        if all(o.name in values for o in self.objectives) and not violation(values, self.objectives):
            self._logged.add(archid)
            self._completed.append(archid)

    def _revoke(self, archid: str) -> None:
        if archid in self._logged:
            self._revoked.add(archid)

    def fail(self, archid: str, reason: str) -> None:
        with self._lock:
            self.failed.setdefault(archid, reason)
            self._revoke(archid)

    def finished(self, archid: str) -> bool:
        """Complete, infeasible or failed: nothing more to evaluate."""
        with self._lock:
            if archid in self.infeasible or archid in self.failed:
                return True
            values = self.values.get(archid, {})
            return all(o.name in values for o in self.objectives)

    def outcomes(self, archids: Iterable[str] | None = None) -> dict[str, Outcome]:
        """How the finished candidates among ``archids`` (default: all) settled."""
        with self._lock:
            found: dict[str, Outcome] = {}
            for archid in self.archs if archids is None else archids:
                values = self.values.get(archid, {})
                if archid in self.failed:
                    found[archid] = Outcome.FAILED
                elif archid in self.infeasible:
                    found[archid] = Outcome.INFEASIBLE
                elif archid in self.archs and all(o.name in values for o in self.objectives):
                    found[archid] = Outcome.COMPLETE
            return found

    def complete(self) -> dict[str, list[float]]:
        """Feasible candidates with every objective measured, in proposal order, as value vectors."""
        return self.settled()[1]

    def settled(self) -> tuple[list[str], dict[str, list[float]]]:
        """At one instant: the finished candidates (complete, infeasible or failed) in proposal order, and
        the complete ones as :meth:`complete` gives them -- the rows a front is computed over."""
        with self._lock:
            names = [o.name for o in self.objectives]
            finished, points = [], {}
            for archid in self.archs:
                values = self.values.get(archid, {})
                measured = all(n in values for n in names)
                dropped = archid in self.infeasible or archid in self.failed
                if dropped or measured:
                    finished.append(archid)
                if measured and not dropped:
                    points[archid] = [values[n] for n in names]
            return finished, points

    def population(self, iteration: int) -> list[str]:
        with self._lock:
            return [a for a, it in self.iteration_of.items() if it == iteration]
