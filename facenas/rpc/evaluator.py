"""The Evaluator servicer shared by trainer, latency_cpu and latency_snp: jobs over gRPC.

It validates requests (a bad one is INVALID_ARGUMENT at submission, naming the field), turns them into
jobs of a :class:`~facenas.jobs.JobManager` and streams their progress. Failures while a job runs are
part of the job (its ``failure`` kind says what the caller should do), not a status code of the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from facenas.domain import EvalKey, budget_key
from facenas.errors import InvalidInput
from facenas.jobs import JobManager, JobSpec
from facenas.rpc.evalconv import budget_from_proto, job_to_proto, space_from_proto, target_to_proto
from facenas.v1 import common_pb2, common_pb2_grpc
from facenas.workers.base import parse_arch

HEARTBEAT_S = 10.0
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 0.05, 60.0
MAX_OWNER_CHARS = 128


class EvaluatorServicer(common_pb2_grpc.EvaluatorServicer):
    """Serves one backend's jobs; ``manager.service`` names it in metrics and logs."""

    def __init__(self, manager: JobManager) -> None:
        self.manager = manager
        self.backend = manager.backend

    def Describe(self, request: common_pb2.DescribeRequest, context: grpc.ServicerContext) -> Any:
        space = space_from_proto(request.space)
        objective = request.objective or self.backend.objectives[0]
        self.backend.check_objective(objective)
        target = self.backend.target(objective, space)
        return common_pb2.DescribeResponse(
            objectives=list(self.backend.objectives),
            target=target_to_proto(target),
            worker=self.manager.worker,
            capacity=self.manager.capacity,
        )

    def SubmitJob(self, request: common_pb2.SubmitJobRequest, context: grpc.ServicerContext) -> Any:
        spec = self.spec(request.request)
        owner = _owner(request.owner)
        job, attached = self.manager.submit(spec, owner)
        return common_pb2.SubmitJobReply(job=job_to_proto(job), attached=attached)

    def WatchJob(self, request: common_pb2.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        heartbeat = request.heartbeat_s or HEARTBEAT_S
        heartbeat = min(MAX_HEARTBEAT_S, max(MIN_HEARTBEAT_S, heartbeat))
        for job in self.manager.follow(request.job_id, heartbeat, active=context.is_active):
            yield job_to_proto(job)

    def CancelJob(self, request: common_pb2.CancelJobRequest, context: grpc.ServicerContext) -> Any:
        jobs = self.manager.cancel(request.job_id, _owner(request.owner))
        return common_pb2.CancelJobReply(jobs=[job_to_proto(j) for j in jobs])

    def ListJobs(self, request: common_pb2.ListJobsRequest, context: grpc.ServicerContext) -> Any:
        jobs = self.manager.list(_owner(request.owner), request.active_only)
        return common_pb2.ListJobsReply(jobs=[job_to_proto(j) for j in jobs])

    def spec(self, request: common_pb2.EvaluateRequest) -> JobSpec:
        """Validate an evaluation request into a job (InvalidInput names the offending field)."""
        self.backend.check_objective(request.objective)
        space = space_from_proto(request.space)
        budget = budget_from_proto(request.budget)
        arch = parse_arch(request.architecture.json, request.architecture.archid, space)
        target = self.backend.target(request.objective, space)
        budget_part = budget_key(request.objective, budget, space.img_size)
        model = arch.spec.fingerprint(space.num_classes, space.in_channels)
        key = EvalKey(arch.archid, request.objective, budget_part, target.key, model)
        return JobSpec(key, arch, space, budget, target)


def _owner(owner: str) -> str:
    if len(owner) > MAX_OWNER_CHARS or not owner.isprintable():
        raise InvalidInput(f"owner: must be at most {MAX_OWNER_CHARS} printable characters")
    return owner
