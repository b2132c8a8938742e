"""The in-process adapter of :class:`~facenas.search.evaluator.Evaluator`: replicas are
:class:`~facenas.jobs.JobManager` s in this process, with the same job semantics as over gRPC (submit or
attach by key, progress, owners, cancel). Unit tests use it to exercise measuring, retries, resume and
cancel without processes; :meth:`LocalEvaluator.kill` makes a replica die with its jobs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping

from facenas.domain import EvalKey, EvalSpace, FailureKind, JobState
from facenas.errors import Cancelled, InvalidInput, NotFound, Unavailable
from facenas.jobs import JobManager, JobSpec, JobView
from facenas.search.evaluator import (
    EvalProgress,
    EvalResult,
    EvalTask,
    EvaluationFailed,
    Evaluator,
    ProgressSink,
    WorkerLost,
    WorkerUnreachable,
)
from facenas.workers.base import TargetInfo, parse_arch


class LocalEvaluator(Evaluator):
    """Replicas named by ``managers``' keys; all must serve the same backend targets."""

    def __init__(self, service: str, managers: Mapping[str, JobManager], heartbeat_s: float = 0.05) -> None:
        self.service = service
        self.managers = dict(managers)
        self.heartbeat_s = heartbeat_s
        self._dead: set[str] = set()
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return sum(m.capacity for name, m in self.managers.items() if name not in self._dead)

    def describe(self, objective: str, space: EvalSpace) -> TargetInfo:
        alive = self._alive()
        if not alive:
            raise WorkerUnreachable(self.service, "no replica alive")
        targets = {m.backend.target(objective, space) for m in alive.values()}
        if len(targets) != 1:
            raise InvalidInput(f"{self.service}: replicas disagree on the target of {objective!r}: {targets}")
        return targets.pop()

    def evaluate(
        self,
        task: EvalTask,
        on_progress: ProgressSink,
        stop: threading.Event,
        avoid: frozenset[str] = frozenset(),
        timeout_s: float = 3600.0,
    ) -> EvalResult:
        name, manager = self._place(task.key, avoid)
        spec = self._spec(manager, task)
        began = time.monotonic()
        try:
            view, attached = manager.submit(spec, task.owner)
        except Unavailable as err:  # shutting down (killed after it was chosen): as the gRPC adapter has it
            raise WorkerUnreachable(name, str(err)) from None
        deadline = began + timeout_s

        def active() -> bool:
            return not stop.is_set() and name not in self._dead and time.monotonic() < deadline

        for view in manager.follow(spec.job_id, self.heartbeat_s, 0.0, active):
            if not view.state.finished:
                on_progress(EvalProgress(task.key, name, str(view.state), view.progress, attached))
        if name in self._dead:
            raise WorkerLost(name, "the replica died")
        if stop.is_set():
            raise Cancelled("search stopped")
        if not view.state.finished:
            manager.cancel(spec.job_id, task.owner)
            raise EvaluationFailed("timeout", "ran past evaluation.timeout_s", name)
        return _outcome(view, name, attached, time.monotonic() - began)

    def cancel(self, owner: str, key: EvalKey | None = None) -> None:
        for manager in self._alive().values():
            with contextlib.suppress(NotFound):
                manager.cancel(key.job_id if key else "", owner)

    def kill(self, name: str) -> None:
        """The replica dies: its jobs are lost and whoever follows them learns it."""
        with self._lock:
            self._dead.add(name)
        self.managers[name].close(timeout_s=0)

    def revive(self, name: str, manager: JobManager) -> None:
        """A replica comes back (with no jobs: a restarted worker)."""
        with self._lock:
            self.managers[name] = manager
            self._dead.discard(name)

    def _alive(self) -> dict[str, JobManager]:
        with self._lock:
            return {n: m for n, m in self.managers.items() if n not in self._dead}

    def _place(self, key: EvalKey, avoid: frozenset[str]) -> tuple[str, JobManager]:
        alive = self._alive()
        if not alive:
            raise WorkerUnreachable(self.service, "no replica alive")
        for name, manager in alive.items():  # where the job already is
            try:
                if manager.get(key.job_id).state in (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED):
                    return name, manager
            except NotFound:
                continue
        fresh = {n: m for n, m in alive.items() if n not in avoid} or alive
        name = min(fresh, key=lambda n: len(fresh[n].list(active_only=True)) / fresh[n].capacity)
        return name, fresh[name]

    def _spec(self, manager: JobManager, task: EvalTask) -> JobSpec:
        backend = manager.backend
        try:
            backend.check_objective(task.key.objective)
            arch = parse_arch(task.arch_json, task.key.archid, task.space)
        except InvalidInput as err:
            raise EvaluationFailed(FailureKind.INVALID, str(err)) from None
        target = backend.target(task.key.objective, task.space)
        if target.key != task.key.target:
            raise WorkerLost(
                manager.service, f"it evaluates for {target.key!r}, expected {task.key.target!r}"
            )
        return JobSpec(task.key, arch, task.space, task.budget, target)


def _outcome(view: JobView, replica: str, attached: bool, wall: float) -> EvalResult:
    if view.state == JobState.SUCCEEDED and view.result is not None:
        result = view.result
        on_worker = max(0.0, view.finished_at - view.created_at)
        return EvalResult(
            result.value,
            result.unit,
            result.details,
            view.worker,
            result.seconds,
            replica,
            attached,
            0.0 if attached else max(0.0, wall - on_worker),
        )
    if view.state == JobState.CANCELLED:
        raise WorkerLost(replica, f"the job was cancelled on the worker ({view.error})")
    raise EvaluationFailed(view.failure, view.error or "failed", replica)
