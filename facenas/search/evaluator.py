"""What the search engine evaluates through, in domain types: an :class:`Evaluator` per objective service.

``evaluate`` submits a task or attaches to its job where one already runs (the task's key names the job
on every worker), follows its progress and returns its result. It raises, by cause:

* :class:`EvaluationFailed` -- the evaluation itself failed; ``kind`` says whether the model is at fault
  (``invalid``), the figure would not settle (``unstable``), the worker could not serve it
  (``unavailable``), it raised (``error``) or ran past its time (``timeout``);
* :class:`WorkerLost` -- the replica died, lost the job or stopped answering: run it elsewhere;
  :class:`WorkerUnreachable` (a kind of it) when no replica could even take the job (an outage, not
  the job's fault);
* :class:`~facenas.errors.Cancelled` -- ``stop`` was set. The job keeps running on its worker (a
  searcher that stops or crashes does not cancel work); :meth:`Evaluator.cancel` cancels it.

Two adapters: the gRPC replica pool (:mod:`facenas.search.dispatch`) and an in-process one
(:mod:`facenas.search.local`) that unit tests use to exercise measuring, retries, resume and cancel
without processes.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from facenas.domain import Budget, EvalKey, EvalSpace, FailureKind, JobProgress
from facenas.errors import FacenasError, Unavailable
from facenas.workers.base import TargetInfo


@dataclass(frozen=True)
class EvalTask:
    """One evaluation to run: its key (the job's name everywhere), the arch document and the recipe."""

    key: EvalKey
    arch_json: str
    space: EvalSpace
    budget: Budget
    owner: str  # the search id: cancelling the search cancels its jobs


@dataclass(frozen=True)
class EvalProgress:
    """Where a running evaluation is, as its worker last said."""

    key: EvalKey
    replica: str
    state: str  # "queued" or "running"
    progress: JobProgress
    attached: bool  # joined a job that was already there (e.g. after a searcher restart)

    def to_dict(self) -> dict[str, Any]:
        p = self.progress
        return {
            "archid": self.key.archid,
            "objective": self.key.objective,
            "replica": self.replica,
            "state": self.state,
            "phase": p.phase,
            "step": p.step,
            "total": p.total,
            "loss": p.loss,
            "eta_s": p.eta_s,
            "elapsed_s": round(p.elapsed_s, 3),
            "queue_position": p.queue_position,
            "attached": self.attached,
        }


@dataclass(frozen=True)
class EvalResult:
    """A finished evaluation and where it ran."""

    value: float
    unit: str
    details: Mapping[str, Any] = field(default_factory=dict)
    worker: str = ""
    seconds: float = 0.0  # the worker's own wall time
    replica: str = ""
    attached: bool = False
    overhead_s: float = 0.0  # submission to result, minus the job's time on the worker


class EvaluationFailed(FacenasError):  # noqa: N818 - reads as an outcome
    """The evaluation ran (or was refused) and failed; ``kind`` is a :class:`FailureKind` or ``timeout``."""

    def __init__(self, kind: FailureKind | str, message: str, replica: str = "") -> None:
        self.kind = str(kind)
        self.replica = replica
        super().__init__(message)


class WorkerLost(Unavailable):
    """A replica died, lost the job or stopped answering; the job should run elsewhere."""

    def __init__(self, replica: str, reason: str) -> None:
        self.replica = replica
        super().__init__(f"{replica}: {reason}")


class WorkerUnreachable(WorkerLost):
    """The job could not be placed: the replica refused the connection, timed out or was overloaded
    (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED), or no replica is alive. The job never ran."""


ProgressSink = Callable[[EvalProgress], None]


class Evaluator(abc.ABC):
    """The replicas of one objective service (``trainer``, ``latency_cpu`` or ``latency_snp``)."""

    service: str

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """Evaluations the replicas run at once."""

    @abc.abstractmethod
    def describe(self, objective: str, space: EvalSpace) -> TargetInfo:
        """The target every reachable replica measures ``objective`` on (they must agree)."""

    @abc.abstractmethod
    def evaluate(
        self,
        task: EvalTask,
        on_progress: ProgressSink,
        stop: threading.Event,
        avoid: frozenset[str] = frozenset(),
        timeout_s: float = 3600.0,
    ) -> EvalResult:
        """Submit ``task`` (or attach to its job) on a replica not in ``avoid`` if possible, follow it
        and return its result; see the module docstring for what it raises."""

    @abc.abstractmethod
    def cancel(self, owner: str, key: EvalKey | None = None) -> None:
        """Cancel ``owner``'s job for ``key`` (all of ``owner``'s jobs when None) on every replica; jobs
        other owners still want keep running."""

    def demand(self) -> int:
        """Evaluations running or waiting for a slot (for autoscaling)."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
