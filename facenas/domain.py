"""Domain records shared by the store, the searcher and the workers (torch-free).

An evaluation is identified by :class:`EvalKey` = (archid, objective, budget, target, model): the same
architecture measured on another host, at another image size or with another training budget, or built
by another space (other constant choices, classes or input channels) is a different evaluation, so
results from different setups are never silently mixed.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Direction(enum.StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


@dataclass(frozen=True)
class ObjectiveSpec:
    """A named objective (Archai's names), its direction, unit and the service kind measuring it.

    ``trained``: the value comes from a partially trained model, so it depends on the whole training
    budget (see :func:`budget_key`), not only on the input size.
    """

    name: str
    direction: Direction
    unit: str
    service: str  # "trainer", "latency_cpu" or "latency_snp"
    trained: bool = False


OBJECTIVES: Mapping[str, ObjectiveSpec] = {
    spec.name: spec
    for spec in (
        ObjectiveSpec("Partial Training Val. IOU", Direction.MAXIMIZE, "miou", "trainer", trained=True),
        ObjectiveSpec("CPU ONNX Latency (s)", Direction.MINIMIZE, "s", "latency_cpu"),
        ObjectiveSpec("SNP Quantized Latency (s)", Direction.MINIMIZE, "s", "latency_snp"),
        # ours: val mIOU of the int8 model that ships (partially trained, then quantized)
        ObjectiveSpec("SNP Quantized Val. IOU", Direction.MAXIMIZE, "miou", "latency_snp", trained=True),
    )
}


class SearchStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (SearchStatus.COMPLETED, SearchStatus.CANCELLED, SearchStatus.FAILED)


def canonical_json(data: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): equal data gives equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class EvalKey:
    """What was measured: ``budget`` and ``target`` are canonical strings, e.g.
    ``budget = "bs=16,img=64x64,lr=0.0002,steps=80"`` and ``target = "cpu/3f2a9c1b07de/t1"``.

    ``model`` is the fingerprint of the built model (:meth:`facenas.space.spec.ArchSpec.fingerprint`:
    the architecture with the space's constant choices, classes and input channels), which the archid
    leaves out. It is ``""`` only in evaluations stored before store schema 3, which named no model: no
    key a search makes now matches them, so they are never mixed into its results."""

    archid: str
    objective: str
    budget: str
    target: str
    model: str = ""

    @property
    def job_id(self) -> str:
        """The id of this evaluation's job on a worker: the same key is the same job everywhere."""
        text = canonical_json([self.archid, self.objective, self.budget, self.target, self.model])
        return hashlib.sha1(text.encode()).hexdigest()[:24]


class JobState(enum.StrEnum):
    """Where an evaluation job is on its worker."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class FailureKind(enum.StrEnum):
    """Why a job failed, which decides what the searcher does next (see ``common.proto``)."""

    NONE = ""
    INVALID = "invalid"  # a bad model or request: fail the candidate, the replica is fine
    UNAVAILABLE = "unavailable"  # the worker cannot serve it now: retry on another replica
    UNSTABLE = "unstable"  # the measurement would not settle: never keep it, measure again later
    ERROR = "error"  # the evaluation raised: one more try elsewhere
    NOT_EVALUABLE = "not_evaluable"  # the model fails on this target (export, conversion...): fail it once


@dataclass(frozen=True)
class JobProgress:
    """How far a job is: its phase (``queued``, ``train``, ``measure``...), step of total, the last loss,
    the seconds left at the phase's rate so far, seconds since it started, place in the queue (1 = next)."""

    phase: str = "queued"
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0
    queue_position: int = 0


@dataclass(frozen=True)
class Evaluation:
    """One measured value with its unit and everything the worker reported about how it was made."""

    key: EvalKey
    value: float
    unit: str
    details: Mapping[str, Any] = field(default_factory=dict)  # JSON-serialisable
    worker: str = ""
    seconds: float = 0.0  # wall time the worker spent
    created_at: float = 0.0  # unix seconds, set by the store when 0


@dataclass(frozen=True)
class ArchRecord:
    """An architecture as Archai's JSON document, with its archid and parameter count."""

    archid: str
    document: str  # Archai arch JSON text
    params: int


@dataclass(frozen=True)
class SearchRecord:
    """A search: its config (YAML/JSON text as submitted), status and timestamps."""

    search_id: str
    name: str
    config: str
    status: SearchStatus
    created_at: float = 0.0
    updated_at: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Candidate:
    """An architecture proposed within a search (a member of the search's history), as the search's space
    builds it: its arch document, parameter count and model fingerprint (the ``model`` of its
    evaluations' keys; ``""`` for candidates stored before store schema 3)."""

    search_id: str
    archid: str
    iteration: int
    parents: tuple[str, ...] = ()
    proposed_at: float = 0.0
    document: str = ""  # Archai arch JSON
    params: int = 0
    model: str = ""


@dataclass(frozen=True)
class IterationRecord:
    """Search state after iteration ``iteration``: the Pareto front, hypervolume, algorithm state."""

    search_id: str
    iteration: int
    pareto: tuple[str, ...]
    hypervolume: float
    state: Mapping[str, Any]  # algorithm-specific, JSON-serialisable (e.g. RNG state, population)
    walltime_s: float = 0.0
    created_at: float = 0.0


@dataclass(frozen=True)
class Failure:
    """A candidate of a search that failed for good on one objective: the reason goes to its outputs."""

    search_id: str
    archid: str
    objective: str
    reason: str
    kind: str = ""  # the FailureKind value of the cause ("invalid", "not_evaluable", "unstable", ...)
    created_at: float = 0.0


@dataclass(frozen=True)
class NewEvent:
    """An event to append; a ``token`` makes the append idempotent (a repeat logs nothing new)."""

    kind: str
    payload: Mapping[str, Any]
    token: str = ""


@dataclass(frozen=True)
class Event:
    """One entry of a search's event log; ``seq`` increases by one per search, from 1."""

    search_id: str
    seq: int
    kind: str
    payload: Mapping[str, Any]
    created_at: float = 0.0


@dataclass(frozen=True)
class Budget:
    """A training budget (steps, or epochs when ``steps`` is 0) and the recipe around it."""

    steps: int = 0
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 2e-4
    seed: int = 0
    max_eval_batches: int = 0  # 0 = whole validation split

    def key(self, img_size: tuple[int, int]) -> str:
        """Canonical string for cache keys; equal budgets give equal strings."""
        amount = f"steps={self.steps}" if self.steps else f"epochs={self.epochs:g}"
        parts = [
            amount,
            f"bs={self.batch_size}",
            f"lr={self.learning_rate:g}",
            f"seed={self.seed}",
            f"img={img_size[0]}x{img_size[1]}",
        ]
        if self.max_eval_batches:
            parts.append(f"evalb={self.max_eval_batches}")
        return ",".join(parts)


@dataclass(frozen=True)
class EvalSpace:
    """What a worker needs to build and feed a model: classes, channels, image size (w, h)."""

    num_classes: int = 18
    in_channels: int = 3
    img_size: tuple[int, int] = (256, 256)


def budget_key(objective: str, budget: Budget, img_size: tuple[int, int]) -> str:
    """The budget part of an :class:`EvalKey`: objectives of trained models depend on the whole budget,
    measurements only on the input size."""
    spec = OBJECTIVES.get(objective)
    if spec is not None and spec.trained:
        return budget.key(img_size)
    return f"img={img_size[0]}x{img_size[1]}"


class Outcome(enum.StrEnum):
    """How a candidate settled: nothing more is evaluated for it afterwards."""

    COMPLETE = "complete"  # every objective measured, every constraint met
    INFEASIBLE = "infeasible"  # a measured value broke a constraint
    FAILED = "failed"  # an evaluation failed for good (its Failure holds the reason)


@dataclass(frozen=True)
class SearchProgress:
    """How far a search is, as the store counts it: candidates proposed, settled by outcome, and the last
    iteration record (None before the first)."""

    search_id: str
    candidates: int = 0
    complete: int = 0
    infeasible: int = 0
    failed: int = 0
    last_iteration: IterationRecord | None = None

    @property
    def settled(self) -> int:
        return self.complete + self.infeasible + self.failed
