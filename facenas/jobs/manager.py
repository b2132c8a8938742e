"""Evaluation jobs on a worker: they outlive the connections that asked for them.

A job is keyed by its evaluation key (``EvalKey.job_id``). Submitting a key that is queued, running or
recently finished attaches the caller to that job instead of starting another; every caller is an
*owner*, and a job is cancelled only when its last owner cancels it. Jobs run on a fixed set of slots,
each bound to a device (``cuda:0`` twice for two trainings per GPU, or ``cpu``), in submission order.
Progress (phase, step of total, loss, ETA) is kept per job and followed with :meth:`JobManager.follow`,
which also repeats the current state at every heartbeat so that a silent stream means a dead link.
Finished jobs are kept for ``retention_s`` (and at most ``max_finished``), so a searcher that restarts
collects results that finished while it was down. A worker that dies loses its jobs; on a graceful stop
they fail as UNAVAILABLE, which tells the searcher to run them elsewhere at once.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from facenas.domain import FailureKind, JobProgress, JobState
from facenas.errors import (
    ArchNotEvaluable,
    Cancelled,
    DatasetError,
    InvalidInput,
    NotFound,
    Unavailable,
    UnstableMeasurement,
)
from facenas.jobs.model import JobResult, JobSpec, JobView
from facenas.rpc import metrics
from facenas.workers.base import EvaluationBackend, worker_id

log = logging.getLogger(__name__)

DEFAULT_RETENTION_S = 24 * 3600.0
DEFAULT_MAX_FINISHED = 10_000
DEFAULT_MAX_QUEUED = 1024


class _Job:
    """Mutable job state; only touched with the manager's condition held."""

    def __init__(self, spec: JobSpec, owner: str) -> None:
        self.spec: JobSpec | None = spec  # dropped when the job ends: a kept job needs no model
        self.job_id = spec.job_id
        self.key = spec.key
        self.target = spec.target
        self.owners: set[str] = {owner}
        self.state = JobState.QUEUED
        self.progress = JobProgress()
        self.result: JobResult | None = None
        self.failure = FailureKind.NONE
        self.error = ""
        self.device = ""
        self.created_at = time.time()
        self.started_at = 0.0
        self.finished_at = 0.0
        self.finished_mono = 0.0
        self.began_mono = 0.0
        self.phase_start = (0.0, 0)  # (monotonic time, step) when the current phase began
        self.version = 0
        self.cancelled = threading.Event()


class JobManager:
    """Runs an :class:`EvaluationBackend`'s evaluations as jobs on ``slots`` (one device per slot)."""

    def __init__(
        self,
        backend: EvaluationBackend,
        service: str,
        slots: Sequence[str] = ("cpu",),
        retention_s: float = DEFAULT_RETENTION_S,
        max_finished: int = DEFAULT_MAX_FINISHED,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        if not slots:
            raise InvalidInput("a worker needs at least one evaluation slot")
        self.backend = backend
        self.service = service
        self.slots = tuple(slots)
        self.retention_s = retention_s
        self.max_finished = max_finished
        self.max_queued = max_queued
        self.worker = worker_id()
        self._cond = threading.Condition()
        self._jobs: dict[str, _Job] = {}
        self._queue: collections.deque[_Job] = collections.deque()
        self._finished: collections.deque[_Job] = collections.deque()  # kept finished jobs, oldest first
        self._closed = False
        metrics.CAPACITY.labels(service).set(len(self.slots))
        self._threads = [
            threading.Thread(target=self._serve_slot, args=(device,), name=f"job-slot-{i}", daemon=True)
            for i, device in enumerate(self.slots)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def capacity(self) -> int:
        return len(self.slots)

    # --- commands ----------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, owner: str = "") -> tuple[JobView, bool]:
        """Start ``spec`` or attach ``owner`` to its queued, running or kept finished job.

        Returns the job and whether it attached. A job that failed or was cancelled runs again.
        """
        with self._cond:
            self._sweep()
            job = self._jobs.get(spec.job_id)
            if job is not None and job.state in (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED):
                job.owners.add(owner)
                metrics.JOBS_ATTACHED.labels(self.service).inc()
                return self._view(job), True
            if self._closed:
                raise Unavailable(f"{self.service} is shutting down")
            if len(self._queue) >= self.max_queued:
                raise Unavailable(f"{self.service} queue is full ({self.max_queued} jobs); retry later")
            if job is not None:  # failed or cancelled: it runs again, its finished record goes
                self._finished.remove(job)
            job = _Job(spec, owner)
            self._jobs[spec.job_id] = job
            self._queue.append(job)
            self._publish_queue()
            self._cond.notify_all()
            log.info(
                "job queued",
                extra={"job_id": spec.job_id, "archid": spec.key.archid, "objective": spec.key.objective},
            )
            return self._view(job), False

    def cancel(self, job_id: str, owner: str = "") -> list[JobView]:
        """Drop ``owner`` from one job (``job_id``) or from all its active jobs (empty ``job_id``); a job
        left without owners, or any job when ``owner`` is empty, is cancelled. Returns the jobs touched."""
        with self._cond:
            if job_id:
                job = self._jobs.get(job_id)
                if job is None:
                    raise NotFound(f"no job {job_id} on {self.service} at {self.worker}")
                jobs = [job]
            elif owner:
                jobs = [j for j in self._jobs.values() if owner in j.owners and not j.state.finished]
            else:
                raise InvalidInput("job_id or owner: give at least one")
            for job in jobs:
                if job.state.finished:
                    continue
                if owner and job.owners - {owner}:
                    job.owners.discard(owner)  # others still want it
                    continue
                self._stop(job, JobState.CANCELLED, FailureKind.NONE, "cancelled by its owner(s)")
            return [self._view(j) for j in jobs]

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop: queued and running jobs fail as UNAVAILABLE (run them elsewhere); slots are joined."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for job in list(self._jobs.values()):
                if not job.state.finished:
                    self._stop(job, JobState.FAILED, FailureKind.UNAVAILABLE, f"{self.service} shut down")
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- queries -----------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobView:
        with self._cond:
            return self._view(self._find(job_id))

    def list(self, owner: str = "", active_only: bool = False) -> list[JobView]:
        """Jobs (of ``owner`` when given), oldest first; finished ones too unless ``active_only``."""
        with self._cond:
            self._sweep()
            jobs = sorted(self._jobs.values(), key=lambda j: j.created_at)
            return [
                self._view(j)
                for j in jobs
                if (not owner or owner in j.owners) and not (active_only and j.state.finished)
            ]

    def follow(
        self,
        job_id: str,
        heartbeat_s: float = 10.0,
        min_interval_s: float = 0.25,
        active: Callable[[], bool] = lambda: True,
    ) -> Iterator[JobView]:
        """The job now, then after every change (at most every ``min_interval_s``) and at least every
        ``heartbeat_s``, until it is finished or ``active()`` turns false."""
        with self._cond:
            job = self._find(job_id)
        sent = -1
        while active():
            with self._cond:
                deadline = time.monotonic() + heartbeat_s
                while job.version == sent and active():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 0.5))
                view, sent = self._view(job), job.version
            yield view
            if view.state.finished:
                return
            with self._cond:  # rate limit, but deliver the end at once
                until = time.monotonic() + min_interval_s
                while not job.state.finished and (left := until - time.monotonic()) > 0:
                    self._cond.wait(left)

    # --- running -----------------------------------------------------------------------------------

    def _serve_slot(self, device: str) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                self._publish_queue()
                job.state = JobState.RUNNING
                job.device = device
                job.started_at = time.time()
                job.began_mono = time.monotonic()
                job.phase_start = (job.began_mono, 0)
                job.progress = JobProgress(phase="starting")
                self._bump(job)
                spec = job.spec  # taken now: a cancellation may end the job (and drop it) any moment
            assert spec is not None, "a queued job has its spec"
            self._run(job, spec, device)

    def _run(self, job: _Job, spec: JobSpec, device: str) -> None:
        load_before = _host_load()
        metrics.WORK_IN_FLIGHT.labels(self.service).inc()
        outcome = "error"
        try:
            measurement = self.backend.evaluate(
                spec.arch, spec.key.objective, spec.space, spec.budget, _JobWork(self, job, device)
            )
        except Cancelled as err:
            outcome = "cancelled"
            self._end(job, JobState.CANCELLED, FailureKind.NONE, str(err))
        except UnstableMeasurement as err:
            outcome = "unstable"
            self._end(job, JobState.FAILED, FailureKind.UNSTABLE, str(err))
        except DatasetError as err:  # the worker's data (missing, stale cache...), not the model
            outcome = "unavailable"
            self._end(job, JobState.FAILED, FailureKind.UNAVAILABLE, str(err))
        except InvalidInput as err:
            outcome = "invalid"
            self._end(job, JobState.FAILED, FailureKind.INVALID, str(err))
        except ArchNotEvaluable as err:  # the model's fault, the same on every replica
            outcome = "not_evaluable"
            where = {"job_id": spec.job_id, "archid": spec.key.archid, "error": str(err)}
            log.info("architecture not evaluable", extra=where)
            self._end(job, JobState.FAILED, FailureKind.NOT_EVALUABLE, str(err))
        except Unavailable as err:
            outcome = "unavailable"
            self._end(job, JobState.FAILED, FailureKind.UNAVAILABLE, str(err))
        except Exception as err:
            log.exception("evaluation failed", extra={"job_id": spec.job_id, "archid": spec.key.archid})
            self._end(job, JobState.FAILED, FailureKind.ERROR, f"{type(err).__name__}: {err}")
        else:
            outcome = "ok"
            seconds = time.monotonic() - job.began_mono
            details = {**measurement.details, "host_load": {"start": load_before, "end": _host_load()}}
            result = JobResult(measurement.value, measurement.unit, details, seconds)
            self._end(job, JobState.SUCCEEDED, FailureKind.NONE, "", result)
            log.info(
                "evaluated",
                extra={
                    "job_id": spec.job_id,
                    "archid": spec.key.archid,
                    "objective": spec.key.objective,
                    "value": measurement.value,
                    "seconds": seconds,
                    "device": device,
                },
            )
        finally:
            metrics.WORK_IN_FLIGHT.labels(self.service).dec()
            metrics.EVALUATIONS.labels(self.service, spec.key.objective, outcome).inc()
            metrics.EVALUATION_SECONDS.labels(self.service, spec.key.objective).observe(
                time.monotonic() - job.began_mono
            )

    def _end(
        self,
        job: _Job,
        state: JobState,
        failure: FailureKind,
        error: str,
        result: JobResult | None = None,
    ) -> None:
        """Record how the backend returned, unless the job was already ended (cancelled, shut down)."""
        with self._cond:
            if job.state.finished:
                return
            if state == JobState.CANCELLED and not job.cancelled.is_set():
                state, failure = JobState.FAILED, FailureKind.ERROR  # cancelled by nobody: a bug
            job.result = result
            self._finish(job, state, failure, error)

    def _stop(self, job: _Job, state: JobState, failure: FailureKind, error: str) -> None:
        """End a queued or running job now (condition held); a running one stops at its next check."""
        job.cancelled.set()
        if job.state == JobState.QUEUED:
            self._queue.remove(job)
            self._publish_queue()
        self._finish(job, state, failure, error)
        log.info("job stopped", extra={"job_id": job.job_id, "state": str(state), "reason": error})

    def _finish(self, job: _Job, state: JobState, failure: FailureKind, error: str) -> None:
        job.state, job.failure, job.error = state, failure, error
        job.finished_at = time.time()
        job.finished_mono = time.monotonic()
        job.spec = None  # the architecture and its document: thousands of kept jobs need none of it
        self._finished.append(job)
        self._bump(job)

    def _report(self, job: _Job, phase: str, step: int, total: int, loss: float | None) -> None:
        with self._cond:
            if job.state != JobState.RUNNING:
                return
            now = time.monotonic()
            previous = job.progress
            if phase != previous.phase or step < previous.step:  # a new phase counts from 0
                job.phase_start = (now, step)
                done = step
            else:
                done = step - previous.step
            if done > 0:
                metrics.JOB_STEPS.labels(self.service, phase).inc(done)
            began, first = job.phase_start
            eta = None
            if total > 0 and step > first and now > began:
                eta = (total - step) * (now - began) / (step - first)
            if loss is not None and not math.isfinite(loss):
                loss = None
            job.progress = JobProgress(phase, step, total, loss, eta, now - job.began_mono)
            self._bump(job)

    # --- helpers (condition held) --------------------------------------------------------------------

    def _find(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id} on {self.service} at {self.worker}")
        return job

    def _bump(self, job: _Job) -> None:
        job.version += 1
        self._cond.notify_all()

    def _view(self, job: _Job) -> JobView:
        progress = job.progress
        if job.state == JobState.QUEUED:
            progress = replace(progress, queue_position=self._queue.index(job) + 1)
        elif job.state == JobState.RUNNING:
            progress = replace(progress, elapsed_s=time.monotonic() - job.began_mono)
        return JobView(
            job_id=job.job_id,
            key=job.key,
            target=job.target,
            state=job.state,
            progress=progress,
            owners=tuple(sorted(job.owners)),
            worker=self.worker,
            device=job.device,
            result=job.result,
            failure=job.failure,
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )

    def _sweep(self) -> None:
        """Forget finished jobs past their retention, oldest first beyond ``max_finished`` (each
        submission sweeps: the cost is the jobs it forgets, not the jobs kept)."""
        expired = time.monotonic() - self.retention_s
        while self._finished:
            job = self._finished[0]
            if len(self._finished) <= self.max_finished and job.finished_mono >= expired:
                break
            self._finished.popleft()
            del self._jobs[job.job_id]

    def _publish_queue(self) -> None:
        metrics.QUEUE_DEPTH.labels(self.service).set(len(self._queue))


class _JobWork:
    """The :class:`~facenas.workers.base.Work` a backend gets for one job."""

    def __init__(self, manager: JobManager, job: _Job, device: str) -> None:
        self._manager = manager
        self._job = job
        self._device = device

    @property
    def device(self) -> str:
        return self._device

    def check_alive(self) -> None:
        if self._job.cancelled.is_set():
            raise Cancelled(f"job {self._job.job_id} was stopped: {self._job.error}")

    def report(self, phase: str, step: int = 0, total: int = 0, loss: float | None = None) -> None:
        self.check_alive()
        self._manager._report(self._job, phase, step, total, loss)


def _host_load() -> dict[str, Any]:
    """The host's load now: load averages, runnable tasks and CPUs (every result records it)."""
    facts: dict[str, Any] = {"cpus": os.cpu_count() or 1}
    try:
        one, five, _ = os.getloadavg()
        facts.update(load_1min=one, load_5min=five)
    except OSError:
        pass
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            running = f.read().split()[3].split("/")[0]
        facts["runnable"] = int(running)
    except (OSError, IndexError, ValueError):
        pass
    return facts
