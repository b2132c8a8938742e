"""``ReplicaPool`` on fake stubs: each way a replica can answer, and what the one retry policy
(:mod:`facenas.search.retry`) makes of it -- which errors bench the replica, which fail the candidate."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from facenas.domain import Budget, EvalKey, EvalSpace
from facenas.errors import Cancelled
from facenas.search import retry
from facenas.search.dispatch import FollowPolicy, ReplicaPool
from facenas.search.evaluator import EvalTask, EvaluationFailed, WorkerLost, WorkerUnreachable
from facenas.v1 import common_pb2

KEY = EvalKey("a" * 40, "CPU ONNX Latency (s)", "64x64", "cpu/fake")
TASK = EvalTask(KEY, "{}", EvalSpace(), Budget(), "search-1")
POLICY = FollowPolicy(heartbeat_s=0.05, silence_s=1.0, reattach_s=0.2, rpc_timeout_s=1.0)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details or code.name

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def job(state: int, failure: int = 0, error: str = "", value: float = 0.5) -> common_pb2.Job:
    return common_pb2.Job(
        job_id=KEY.job_id,
        archid=KEY.archid,
        objective=KEY.objective,
        budget=KEY.budget,
        target=KEY.target,
        state=state,
        failure=failure,
        error=error,
        result=common_pb2.EvaluateResponse(value=value, unit="s"),
    )


class _Stream:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[common_pb2.Job]:
        for item in self.items:
            if isinstance(item, grpc.RpcError):
                raise item
            yield item

    def cancel(self) -> None:
        return None


class FakeStub:
    """Answers SubmitJob with ``submit`` (a reply or an error) and WatchJob with ``watch``."""

    def __init__(self, submit: Any, watch: list[Any] | None = None) -> None:
        self.submit = submit
        self.watch = watch or []
        self.submitted = 0

    def SubmitJob(self, request: Any, timeout: float) -> common_pb2.SubmitJobReply:
        self.submitted += 1
        if isinstance(self.submit, grpc.RpcError):
            raise self.submit
        return self.submit

    def WatchJob(self, request: Any) -> _Stream:
        return _Stream(self.watch)

    def ListJobs(self, request: Any, timeout: float) -> common_pb2.ListJobsReply:
        return common_pb2.ListJobsReply()

    def CancelJob(self, request: Any, timeout: float) -> None:
        return None


def pool_of(stub: FakeStub) -> ReplicaPool:
    return ReplicaPool("latency_cpu", ["fake:1"], POLICY, connect=lambda address: (stub, _Channel()))


class _Channel:
    def close(self) -> None:
        return None


def running() -> common_pb2.SubmitJobReply:
    return common_pb2.SubmitJobReply(job=job(common_pb2.JOB_STATE_RUNNING))


def evaluate(pool: ReplicaPool) -> Any:
    return pool.evaluate(TASK, lambda progress: None, threading.Event(), timeout_s=30)


def benched(pool: ReplicaPool) -> bool:
    import time

    return not pool.replicas[0].healthy(time.monotonic())


def test_a_finished_job_is_the_result_and_the_replica_stays_in() -> None:
    pool = pool_of(FakeStub(running(), [job(common_pb2.JOB_STATE_SUCCEEDED, value=0.25)]))
    assert evaluate(pool).value == 0.25
    assert not benched(pool)


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED],
)
def test_a_sick_replica_is_unreachable_and_benched(code: grpc.StatusCode) -> None:
    pool = pool_of(FakeStub(FakeRpcError(code)))
    with pytest.raises(WorkerUnreachable) as caught:
        evaluate(pool)
    assert retry.classify(caught.value).action == retry.Action.WAIT  # an outage: wait, not an attempt
    assert benched(pool)


def test_a_refused_request_fails_the_candidate_and_benches_nothing() -> None:
    pool = pool_of(FakeStub(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "arch: bad")))
    with pytest.raises(EvaluationFailed) as caught:
        evaluate(pool)
    assert retry.classify(caught.value).action == retry.Action.FAIL
    assert not benched(pool)


def test_an_architecture_that_cannot_be_evaluated_fails_once_and_benches_nothing() -> None:
    pool = pool_of(FakeStub(FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "snpe-onnx-to-dlc: rejected")))
    with pytest.raises(EvaluationFailed) as caught:
        evaluate(pool)
    assert retry.classify(caught.value) == retry.Rule("not_evaluable", retry.Action.FAIL, bench=False)
    assert not benched(pool)


def test_an_internal_error_at_submission_is_an_error_not_an_outage() -> None:
    pool = pool_of(FakeStub(FakeRpcError(grpc.StatusCode.INTERNAL, "boom")))
    with pytest.raises(EvaluationFailed) as caught:
        evaluate(pool)
    rule = retry.classify(caught.value)
    assert (rule.cause, rule.action, rule.attempts) == ("error", retry.Action.RETRY, retry.ERROR_ATTEMPTS)
    assert not benched(pool)


@pytest.mark.parametrize(
    ("failure", "cause", "bench"),
    [
        (common_pb2.FAILURE_KIND_INVALID, "invalid", False),
        (common_pb2.FAILURE_KIND_NOT_EVALUABLE, "not_evaluable", False),
        (common_pb2.FAILURE_KIND_UNSTABLE, "unstable", False),
        (common_pb2.FAILURE_KIND_ERROR, "error", False),
        (common_pb2.FAILURE_KIND_UNAVAILABLE, "unreachable", True),
    ],
)
def test_a_failed_job_is_classified_by_its_failure_kind(failure: int, cause: str, bench: bool) -> None:
    pool = pool_of(FakeStub(running(), [job(common_pb2.JOB_STATE_FAILED, failure, "why")]))
    with pytest.raises(EvaluationFailed) as caught:
        evaluate(pool)
    assert retry.classify(caught.value).cause == cause
    assert benched(pool) is bench


def test_a_worker_that_lost_the_job_is_lost_and_benched() -> None:
    pool = pool_of(FakeStub(running(), [FakeRpcError(grpc.StatusCode.NOT_FOUND, "no such job")]))
    with pytest.raises(WorkerLost) as caught:
        evaluate(pool)
    assert not isinstance(caught.value, WorkerUnreachable)
    assert retry.classify(caught.value) == retry.LOST and benched(pool)


def test_a_stream_that_keeps_breaking_loses_the_replica_after_reattach_s() -> None:
    pool = pool_of(FakeStub(running(), [FakeRpcError(grpc.StatusCode.UNAVAILABLE, "link down")]))
    with pytest.raises(WorkerLost, match="unreachable for"):
        evaluate(pool)
    assert benched(pool)


def test_a_replica_building_another_model_is_not_trusted_with_the_task() -> None:
    """A worker keying jobs without the model (an older one) would hand one space's result to another."""
    task = EvalTask(
        dataclasses.replace(KEY, model="5e1f0c2a9b7d3e64"), "{}", EvalSpace(), Budget(), "search-1"
    )
    pool = pool_of(FakeStub(running(), [job(common_pb2.JOB_STATE_SUCCEEDED)]))
    with pytest.raises(WorkerLost, match=r"model ''.*expected.*model '5e1f0c2a9b7d3e64'"):
        pool.evaluate(task, lambda progress: None, threading.Event(), timeout_s=30)


def test_a_task_of_a_search_begun_before_keys_named_the_model_takes_any() -> None:
    reply = common_pb2.SubmitJobReply(job=job(common_pb2.JOB_STATE_RUNNING))
    reply.job.model = "5e1f0c2a9b7d3e64"
    pool = pool_of(FakeStub(reply, [job(common_pb2.JOB_STATE_SUCCEEDED, value=0.25)]))
    assert evaluate(pool).value == 0.25  # TASK's key has model ""


class _OpenStream:
    """A stream that sends ``items``, then (every ``heartbeat_s``, or never) the running job again, and
    stays open until cancelled -- as a real call does, it then raises CANCELLED."""

    def __init__(self, items: list[Any], heartbeat_s: float | None) -> None:
        self.items = items
        self.heartbeat_s = heartbeat_s
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[common_pb2.Job]:
        yield from self.items
        while not self.cancelled.wait(self.heartbeat_s):
            yield job(common_pb2.JOB_STATE_RUNNING)
        raise FakeRpcError(grpc.StatusCode.CANCELLED)

    def cancel(self) -> None:
        self.cancelled.set()


class OpenStub(FakeStub):
    """WatchJob streams stay open: heartbeats every ``heartbeat_s`` (None: silent); counts cancels."""

    def __init__(self, heartbeat_s: float | None) -> None:
        super().__init__(running())
        self.heartbeat_s = heartbeat_s
        self.streams: list[_OpenStream] = []
        self.cancels: list[Any] = []

    def WatchJob(self, request: Any) -> _OpenStream:  # type: ignore[override]
        stream = _OpenStream([job(common_pb2.JOB_STATE_RUNNING)], self.heartbeat_s)
        self.streams.append(stream)
        return stream

    def CancelJob(self, request: Any, timeout: float) -> None:
        self.cancels.append(request)


def open_pool(stub: OpenStub, silence_s: float = 30.0) -> ReplicaPool:
    policy = dataclasses.replace(POLICY, silence_s=silence_s, reattach_s=0.3)
    return ReplicaPool("latency_cpu", ["fake:1"], policy, connect=lambda address: (stub, _Channel()))


def test_a_silent_stream_is_reopened_until_the_deadline() -> None:
    """Each re-opened stream answers with the job's state (the replica is reachable), then falls silent."""
    stub = OpenStub(heartbeat_s=None)
    with pytest.raises(EvaluationFailed, match=r"ran past evaluation\.timeout_s"):
        open_pool(stub, silence_s=0.3).evaluate(TASK, lambda progress: None, threading.Event(), timeout_s=1.5)
    assert len(stub.streams) >= 3 and all(s.cancelled.is_set() for s in stub.streams)


def test_a_job_past_its_deadline_fails_with_a_timeout_and_is_cancelled_on_the_worker() -> None:
    stub = OpenStub(heartbeat_s=0.05)  # alive and well, just too slow
    with pytest.raises(EvaluationFailed, match=r"ran past evaluation\.timeout_s") as caught:
        open_pool(stub).evaluate(TASK, lambda progress: None, threading.Event(), timeout_s=0.3)
    assert caught.value.kind == "timeout"
    assert [r.job_id for r in stub.cancels] == [KEY.job_id] and stub.cancels[0].owner == TASK.owner
    assert all(s.cancelled.is_set() for s in stub.streams)


def test_a_stopped_search_stops_following_its_job() -> None:
    stub = OpenStub(heartbeat_s=0.05)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Cancelled):
        open_pool(stub).evaluate(TASK, lambda progress: None, stop, timeout_s=30)
    assert all(s.cancelled.is_set() for s in stub.streams)
