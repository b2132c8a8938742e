"""What a worker knows about one evaluation job (torch-free records)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from facenas.domain import Budget, EvalKey, EvalSpace, FailureKind, JobProgress, JobState

if TYPE_CHECKING:
    from facenas.space.hgnet import Arch
    from facenas.workers.base import TargetInfo


@dataclass(frozen=True)
class JobSpec:
    """A validated request: what to evaluate, under which key (``key.job_id`` names the job)."""

    key: EvalKey
    arch: Arch
    space: EvalSpace
    budget: Budget
    target: TargetInfo

    @property
    def job_id(self) -> str:
        return self.key.job_id


@dataclass(frozen=True)
class JobResult:
    """A finished evaluation: the value, its unit, what the backend recorded, the worker's wall time."""

    value: float
    unit: str
    details: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class JobView:
    """A job at one moment (times are Unix seconds on the worker's clock)."""

    job_id: str
    key: EvalKey
    target: TargetInfo
    state: JobState
    progress: JobProgress
    owners: tuple[str, ...]
    worker: str
    device: str = ""
    result: JobResult | None = None
    failure: FailureKind = FailureKind.NONE
    error: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
