"""Run one evaluation job to its end over gRPC (tools, tests, one-off clients).

The searcher follows jobs through :class:`facenas.search.dispatch.ReplicaPool`, which also re-attaches
and moves jobs between replicas; this is the plain form: submit (or join), watch, return the result or
raise the error the job's failure kind stands for.
"""

from __future__ import annotations

import grpc

from facenas.domain import FailureKind, JobState
from facenas.errors import (
    ArchNotEvaluable,
    Cancelled,
    FacenasError,
    InvalidInput,
    MeasurementError,
    Unavailable,
    UnstableMeasurement,
)
from facenas.rpc.evalconv import job_failure, job_state
from facenas.rpc.status import error_from_rpc
from facenas.v1 import common_pb2, common_pb2_grpc

_ERRORS: dict[FailureKind, type[FacenasError]] = {
    FailureKind.INVALID: InvalidInput,
    FailureKind.UNAVAILABLE: Unavailable,
    FailureKind.ERROR: MeasurementError,
    FailureKind.NOT_EVALUABLE: ArchNotEvaluable,
}


def run_job(
    stub: common_pb2_grpc.EvaluatorStub,
    request: common_pb2.EvaluateRequest,
    owner: str = "",
    timeout_s: float = 3600.0,
    heartbeat_s: float = 5.0,
) -> common_pb2.EvaluateResponse:
    """Submit ``request`` as a job (or join it), wait for its end and return its result."""
    try:
        reply = stub.SubmitJob(common_pb2.SubmitJobRequest(request=request, owner=owner), timeout=60)
        job = reply.job
        if not job_state(job).finished:
            watch = common_pb2.WatchJobRequest(job_id=job.job_id, heartbeat_s=heartbeat_s)
            for job in stub.WatchJob(watch, timeout=timeout_s):
                if job_state(job).finished:
                    break
    except grpc.RpcError as err:
        raise error_from_rpc(err) from None
    state = job_state(job)
    if state == JobState.SUCCEEDED:
        return job.result
    if state == JobState.CANCELLED:
        raise Cancelled(f"job {job.job_id} was cancelled: {job.error}")
    if state != JobState.FAILED:
        raise Unavailable(f"job {job.job_id} stream ended while {state}")
    kind = job_failure(job)
    if kind == FailureKind.UNSTABLE:
        raise UnstableMeasurement(job.error)
    raise _ERRORS.get(kind, MeasurementError)(job.error)
