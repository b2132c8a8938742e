"""The Evaluator servicer shared by trainer, latency_cpu and latency_snp.

It converts proto <-> domain, bounds concurrency to the backend's capacity (the rest wait in a queue,
visible in the metrics), honours deadlines and cancellation while work runs, and labels every result with
its target, worker and wall time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import grpc

from facenas.domain import Budget, EvalSpace, budget_key
from facenas.errors import Cancelled, InvalidInput, Unavailable
from facenas.rpc import metrics
from facenas.v1 import common_pb2, common_pb2_grpc
from facenas.workers.base import EvaluationBackend, TargetInfo, parse_arch, worker_id

log = logging.getLogger(__name__)

MAX_BATCH = 4096
MAX_STEPS = 10_000_000


def space_from_proto(msg: common_pb2.SearchSpace) -> EvalSpace:
    """Defaults apply to unset (zero) fields."""
    default = EvalSpace()
    return EvalSpace(
        num_classes=msg.num_classes or default.num_classes,
        in_channels=msg.in_channels or default.in_channels,
        img_size=(msg.img_width or default.img_size[0], msg.img_height or default.img_size[1]),
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


def target_to_proto(target: TargetInfo) -> common_pb2.Target:
    return common_pb2.Target(key=target.key, description=target.description, emulated=target.emulated)


class EvaluatorServicer(common_pb2_grpc.EvaluatorServicer):
    """Serves one backend; ``service`` names it in metrics and logs."""

    def __init__(self, backend: EvaluationBackend, service: str, max_queue: int = 64) -> None:
        self.backend = backend
        self.service = service
        self.worker = worker_id()
        self.max_queue = max_queue
        self._slots = threading.BoundedSemaphore(max(1, backend.capacity))
        metrics.CAPACITY.labels(service).set(max(1, backend.capacity))
        self._waiting = 0
        self._lock = threading.Lock()

    def Describe(self, request: common_pb2.DescribeRequest, context: grpc.ServicerContext) -> Any:
        space = space_from_proto(request.space)
        objective = request.objective or self.backend.objectives[0]
        self.backend.check_objective(objective)
        target = self.backend.target(objective, space)
        return common_pb2.DescribeResponse(
            objectives=list(self.backend.objectives),
            target=target_to_proto(target),
            worker=self.worker,
            capacity=self.backend.capacity,
        )

    def Evaluate(self, request: common_pb2.EvaluateRequest, context: grpc.ServicerContext) -> Any:
        self.backend.check_objective(request.objective)
        space = space_from_proto(request.space)
        budget = budget_from_proto(request.budget)
        arch = parse_arch(request.architecture.json, request.architecture.archid, space)
        target = self.backend.target(request.objective, space)

        def check_alive() -> None:
            if not context.is_active():
                raise Cancelled("the caller cancelled or its deadline passed")

        with self._slot(check_alive):
            metrics.WORK_IN_FLIGHT.labels(self.service).inc()
            began = time.perf_counter()
            outcome = "error"
            try:
                result = self.backend.evaluate(arch, request.objective, space, budget, check_alive)
                outcome = "ok"
            finally:
                seconds = time.perf_counter() - began
                metrics.WORK_IN_FLIGHT.labels(self.service).dec()
                metrics.EVALUATIONS.labels(self.service, request.objective, outcome).inc()
                metrics.EVALUATION_SECONDS.labels(self.service, request.objective).observe(seconds)
        log.info(
            "evaluated",
            extra={
                "archid": arch.archid,
                "objective": request.objective,
                "value": result.value,
                "seconds": seconds,
            },
        )
        return common_pb2.EvaluateResponse(
            archid=arch.archid,
            objective=request.objective,
            value=result.value,
            unit=result.unit,
            target=target_to_proto(target),
            budget=budget_key(request.objective, budget, space.img_size),
            details_json=json.dumps(result.details, default=str),
            worker=self.worker,
            seconds=seconds,
        )

    def _slot(self, check_alive: Any) -> _Slot:
        return _Slot(self, check_alive)


class _Slot:
    """Waits for a free evaluation slot, polling so a cancelled caller stops waiting."""

    def __init__(self, owner: EvaluatorServicer, check_alive: Any) -> None:
        self.owner = owner
        self.check_alive = check_alive

    def __enter__(self) -> None:
        owner = self.owner
        with owner._lock:
            if owner._waiting >= owner.max_queue:
                raise Unavailable(f"{owner.service} queue is full ({owner.max_queue} waiting); retry later")
            owner._waiting += 1
            metrics.QUEUE_DEPTH.labels(owner.service).set(owner._waiting)
        try:
            while not owner._slots.acquire(timeout=0.2):
                self.check_alive()
        finally:
            with owner._lock:
                owner._waiting -= 1
                metrics.QUEUE_DEPTH.labels(owner.service).set(owner._waiting)

    def __exit__(self, *exc: object) -> None:
        self.owner._slots.release()
