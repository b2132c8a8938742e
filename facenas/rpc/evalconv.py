"""proto <-> domain for the Evaluator contract (both sides: the workers' servicer and the searcher)."""

from __future__ import annotations

import json
import math

from facenas.domain import Budget, EvalSpace, FailureKind, JobProgress, JobState
from facenas.errors import InvalidInput
from facenas.jobs.model import JobView
from facenas.v1 import common_pb2
from facenas.workers.base import TargetInfo

MAX_BATCH = 4096
MAX_STEPS = 10_000_000

_STATE_TO_PROTO = {
    JobState.QUEUED: common_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: common_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: common_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: common_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: common_pb2.JOB_STATE_CANCELLED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}
_FAILURE_TO_PROTO = {
    FailureKind.NONE: common_pb2.FAILURE_KIND_UNSPECIFIED,
    FailureKind.INVALID: common_pb2.FAILURE_KIND_INVALID,
    FailureKind.UNAVAILABLE: common_pb2.FAILURE_KIND_UNAVAILABLE,
    FailureKind.UNSTABLE: common_pb2.FAILURE_KIND_UNSTABLE,
    FailureKind.ERROR: common_pb2.FAILURE_KIND_ERROR,
    FailureKind.NOT_EVALUABLE: common_pb2.FAILURE_KIND_NOT_EVALUABLE,
}
_FAILURE_FROM_PROTO = {v: k for k, v in _FAILURE_TO_PROTO.items()}


def space_from_proto(msg: common_pb2.SearchSpace) -> EvalSpace:
    """Defaults apply to unset (zero) fields."""
    default = EvalSpace()
    return EvalSpace(
        num_classes=msg.num_classes or default.num_classes,
        in_channels=msg.in_channels or default.in_channels,
        img_size=(msg.img_width or default.img_size[0], msg.img_height or default.img_size[1]),
    )


def space_to_proto(space: EvalSpace) -> common_pb2.SearchSpace:
    w, h = space.img_size
    return common_pb2.SearchSpace(
        num_classes=space.num_classes, in_channels=space.in_channels, img_width=w, img_height=h
    )


def budget_from_proto(msg: common_pb2.TrainingBudget) -> Budget:
    """Validate a budget message (every problem at once)."""
    problems = []
    steps = msg.steps if msg.WhichOneof("amount") == "steps" else 0
    epochs = msg.epochs if msg.WhichOneof("amount") == "epochs" else 1.0
    if not 0 <= steps <= MAX_STEPS:
        problems.append(f"budget.steps: {steps} must be in [1, {MAX_STEPS}]")
    if not 0 < epochs <= 10_000:
        problems.append(f"budget.epochs: {epochs} must be in (0, 10000]")
    batch = msg.batch_size or 16
    if not 1 <= batch <= MAX_BATCH:
        problems.append(f"budget.batch_size: {batch} must be in [1, {MAX_BATCH}]")
    lr = msg.learning_rate or 2e-4
    if not 0 < lr <= 1:
        problems.append(f"budget.learning_rate: {lr} must be in (0, 1]")
    if msg.max_eval_batches < 0:
        problems.append(f"budget.max_eval_batches: {msg.max_eval_batches} must be >= 0")
    if problems:
        raise InvalidInput("; ".join(problems))
    return Budget(steps, epochs, batch, lr, msg.seed, msg.max_eval_batches)


def budget_to_proto(budget: Budget) -> common_pb2.TrainingBudget:
    msg = common_pb2.TrainingBudget(
        batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        seed=budget.seed,
        max_eval_batches=budget.max_eval_batches,
    )
    if budget.steps:
        msg.steps = budget.steps
    else:
        msg.epochs = budget.epochs
    return msg


def target_to_proto(target: TargetInfo) -> common_pb2.Target:
    return common_pb2.Target(key=target.key, description=target.description, emulated=target.emulated)


def target_from_proto(msg: common_pb2.Target) -> TargetInfo:
    return TargetInfo(msg.key, msg.description, msg.emulated)


def job_to_proto(job: JobView) -> common_pb2.Job:
    p = job.progress
    progress = common_pb2.JobProgress(
        phase=p.phase, step=p.step, total=p.total, elapsed_s=p.elapsed_s, queue_position=p.queue_position
    )
    if p.loss is not None:
        progress.loss = p.loss
    if p.eta_s is not None and math.isfinite(p.eta_s):
        progress.eta_s = p.eta_s
    msg = common_pb2.Job(
        job_id=job.job_id,
        archid=job.key.archid,
        objective=job.key.objective,
        budget=job.key.budget,
        target=job.key.target,
        model=job.key.model,
        state=_STATE_TO_PROTO[job.state],
        progress=progress,
        failure=_FAILURE_TO_PROTO[job.failure],
        error=job.error,
        owners=list(job.owners),
        worker=job.worker,
        device=job.device,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
    if job.result is not None:
        msg.result.CopyFrom(
            common_pb2.EvaluateResponse(
                archid=job.key.archid,
                objective=job.key.objective,
                value=job.result.value,
                unit=job.result.unit,
                target=target_to_proto(job.target),
                budget=job.key.budget,
                details_json=json.dumps(job.result.details, default=str),
                worker=job.worker,
                seconds=job.result.seconds,
            )
        )
    return msg


def job_state(msg: common_pb2.Job) -> JobState:
    state = _STATE_FROM_PROTO.get(msg.state)
    if state is None:
        raise InvalidInput(f"job {msg.job_id}: unknown state {msg.state}")
    return state


def job_failure(msg: common_pb2.Job) -> FailureKind:
    return _FAILURE_FROM_PROTO.get(msg.failure, FailureKind.ERROR)


def progress_from_proto(msg: common_pb2.JobProgress) -> JobProgress:
    return JobProgress(
        phase=msg.phase,
        step=msg.step,
        total=msg.total,
        loss=msg.loss if msg.HasField("loss") else None,
        eta_s=msg.eta_s if msg.HasField("eta_s") else None,
        elapsed_s=msg.elapsed_s,
        queue_position=msg.queue_position,
    )
