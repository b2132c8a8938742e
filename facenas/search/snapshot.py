"""A search as the store holds it, in the shape outputs and clients need (torch-free)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from facenas.domain import Direction


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
    iteration: int  # the iteration that proposed it
    parents: tuple[str, ...]
    params: int
    document: str  # Archai arch JSON
    values: Mapping[str, float] = field(default_factory=dict)  # objective name -> value (missing = not yet)
    feasible: bool = True  # False when a constraint (params, latency cap) rejected it
    failed: str = ""  # non-empty when an evaluation failed for good

    def complete(self, objectives: tuple[ObjectiveInfo, ...]) -> bool:
        """All objectives measured (an infeasible candidate is never complete)."""
        return self.feasible and not self.failed and all(o.name in self.values for o in objectives)


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
