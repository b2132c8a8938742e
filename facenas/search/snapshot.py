"""A search as the store holds it, in the shape outputs and clients need (torch-free)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from facenas.domain import Direction, IterationRecord

#: Key of :attr:`IterationRecord.state`: the archids that finished (complete, infeasible or failed) since
#: the previous record, in proposal order. With the earlier records' lists, they are the rows that
#: iteration's front was computed over (its complete ones).
EVALUATED = "evaluated"


@dataclass(frozen=True)
class ObjectiveInfo:
    """One objective of a search, e.g. ``ObjectiveInfo("CPU ONNX Latency (s)", MINIMIZE, "s")``."""

    name: str
    direction: Direction
    unit: str = ""
    constraint: tuple[float, float] | None = None  # feasible range, e.g. (0, 0.3) seconds


@dataclass(frozen=True)
class CandidateState:
    """One proposed architecture with every objective value the store has for it."""

    archid: str
    iteration: int  # the first iteration whose front was computed with it (see :func:`evaluated_in`)
    parents: tuple[str, ...]
    params: int
    document: str  # Archai arch JSON
    values: Mapping[str, float] = field(default_factory=dict)  # objective name -> value (missing = not yet)
    feasible: bool = True  # False when a constraint (params, latency cap) rejected it
    failed: str = ""  # non-empty when an evaluation failed for good
    cv: Mapping[str, float] = field(default_factory=dict)  # latency objective -> its measurement's CV
    stable: Mapping[str, bool] = field(default_factory=dict)  # latency objective -> its stability verdict

    def complete(self, objectives: tuple[ObjectiveInfo, ...]) -> bool:
        """All objectives measured (an infeasible candidate is never complete)."""
        return self.feasible and not self.failed and all(o.name in self.values for o in objectives)


def latency_quality(details: Mapping[str, Any]) -> tuple[float | None, bool | None]:
    """The CV and stability verdict a latency evaluation's details report (CPU and SNPE at the top,
    the int8 emulation under ``int8``); None where they report none (AI Hub, non-latency objectives)."""
    int8 = details.get("int8")
    source: Mapping[str, Any] = int8 if isinstance(int8, Mapping) else details
    cv, stable = source.get("cv"), source.get("stable")
    return (
        float(cv) if isinstance(cv, int | float) and not isinstance(cv, bool) else None,
        stable if isinstance(stable, bool) else None,
    )


@dataclass(frozen=True)
class IterationState:
    """The search after ``iteration``: its Pareto front and hypervolume."""

    iteration: int
    pareto: tuple[str, ...]
    hypervolume: float
    walltime_s: float


@dataclass(frozen=True)
class SearchSnapshot:
    """Everything outputs are made from."""

    search_id: str
    name: str
    objectives: tuple[ObjectiveInfo, ...]
    candidates: tuple[CandidateState, ...]
    iterations: tuple[IterationState, ...]


def evaluated_in(proposed: Mapping[str, int], records: Sequence[IterationRecord]) -> dict[str, int]:
    """For every candidate (archid -> the iteration that proposed it), the first iteration whose front was
    computed with it: the record whose :data:`EVALUATED` list names it. A barrier iteration evaluates what
    it proposed, so that is the proposing iteration; the asynchronous algorithm records an iteration while
    candidates it proposed are still in flight, and those count in a later one. A candidate no record
    counted yet gets an iteration after the last record (it is in no ``search_state`` file until one does).
    Records written before the key existed count the candidates their iteration proposed."""
    counted: dict[str, int] = {}
    for record in sorted(records, key=lambda r: r.iteration):
        listed = record.state.get(EVALUATED)
        members = (
            listed if isinstance(listed, list) else [a for a, k in proposed.items() if k <= record.iteration]
        )
        for archid in members:
            counted.setdefault(str(archid), record.iteration)
    after = max((r.iteration for r in records), default=-1) + 1
    return {a: counted.get(a, max(k, after)) for a, k in proposed.items()}
