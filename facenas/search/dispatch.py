"""The gRPC adapter of :class:`~facenas.search.evaluator.Evaluator`: every replica of one objective service.

A task becomes a job on a replica (``SubmitJob``): on the replica where that key already runs, if any
(the pool learns where from its own submissions and, after a searcher restart, from each replica's
``ListJobs``), else on the least-loaded healthy replica with a free slot (capacity from ``Describe``).
The pool then follows the job's ``WatchJob`` stream, whose heartbeats prove the link alive: a broken or
silent stream is re-opened for up to ``reattach_s`` before the replica counts as lost. A lost replica is
benched with exponential backoff and the caller moves the job elsewhere. A replica whose gRPC health
says NOT_SERVING gets no new job until it says SERVING (:mod:`facenas.search.replica_health`).
``dns:///NAME:PORT`` specs are re-resolved as pods come and go.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import grpc

from facenas.domain import EvalKey, EvalSpace, FailureKind, JobState
from facenas.errors import ArchNotEvaluable, Cancelled, ConfigError, InvalidInput, Unavailable
from facenas.rpc.client import make_channel
from facenas.rpc.evalconv import (
    budget_to_proto,
    job_failure,
    job_state,
    progress_from_proto,
    space_to_proto,
    target_from_proto,
)
from facenas.rpc.resolve import DNS_PREFIX, resolve
from facenas.rpc.status import error_from_rpc
from facenas.search import metrics, retry
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
from facenas.search.replica_health import ReplicaHealth
from facenas.v1 import common_pb2, common_pb2_grpc
from facenas.workers.base import TargetInfo

log = logging.getLogger(__name__)

MAX_BENCH_SECONDS = 30.0
RESOLVE_EVERY_S = 15.0


@dataclass(frozen=True)
class FollowPolicy:
    """How jobs are followed: the heartbeat asked of workers, the silence after which a stream is
    re-opened, and how long a replica may stay unreachable before its jobs move elsewhere."""

    heartbeat_s: float = 10.0
    silence_s: float = 30.0
    reattach_s: float = 20.0
    rpc_timeout_s: float = 10.0


@dataclass
class Replica:
    """One replica of a service and what we know of its health and load."""

    address: str
    stub: common_pb2_grpc.EvaluatorStub
    channel: grpc.Channel
    capacity: int = 1
    jobs: Counter[str] = field(default_factory=Counter)  # job id -> followers in this process
    failures: int = 0
    benched_until: float = 0.0
    targets: dict[str, str] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return len(self.jobs)

    def healthy(self, now: float) -> bool:
        return self.benched_until <= now


def task_to_request(task: EvalTask) -> common_pb2.EvaluateRequest:
    return common_pb2.EvaluateRequest(
        architecture=common_pb2.Architecture(archid=task.key.archid, json=task.arch_json),
        objective=task.key.objective,
        space=space_to_proto(task.space),
        budget=budget_to_proto(task.budget),
    )


@dataclass(eq=False)
class _Watch:
    """One followed job stream: what ends it early, and why it was ended (None: it was not)."""

    STOPPED = "stopped"
    DEADLINE = "deadline"
    SILENT = "silent"

    call: grpc.Future[common_pb2.Job]
    stop: threading.Event
    deadline: float
    heard: float
    reason: str | None = None


class _Watchdog:
    """Ends followed job streams that went silent, ran past their deadline or whose search stopped, by
    cancelling the call (the thread reading it then sees why): one thread for every stream of a pool,
    so that a job's messages reach the evaluation that reads them without a hand-off."""

    TICK_S = 0.25

    def __init__(self, name: str, silence_s: float) -> None:
        self.name = name
        self.silence_s = silence_s
        self._watches: set[_Watch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, call: grpc.Future[common_pb2.Job], stop: threading.Event, deadline: float) -> _Watch:
        watch = _Watch(call, stop, deadline, time.monotonic())
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"watchdog-{self.name}", daemon=True)
                self._thread.start()
        return watch

    def remove(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        """Until no stream is followed (the next :meth:`add` starts another thread)."""
        while True:
            time.sleep(self.TICK_S)
            now = time.monotonic()
            with self._lock:
                if not self._watches:
                    self._thread = None
                    return
                watches = list(self._watches)
            for watch in watches:
                if watch.reason is None and (reason := self._why_end(watch, now)):
                    watch.reason = reason
                    watch.call.cancel()

    def _why_end(self, watch: _Watch, now: float) -> str | None:
        if watch.stop.is_set():
            return _Watch.STOPPED
        if now > watch.deadline:
            return _Watch.DEADLINE
        if now - watch.heard > self.silence_s:
            return _Watch.SILENT
        return None


class ReplicaPool(Evaluator):
    """All replicas of one objective service."""

    def __init__(
        self,
        service: str,
        addresses: Sequence[str],
        policy: FollowPolicy | None = None,
        connect: Callable[[str], tuple[common_pb2_grpc.EvaluatorStub, grpc.Channel]] | None = None,
    ) -> None:
        """``connect(address)`` gives a replica's stub and channel (default: a gRPC channel; unit
        tests give fake stubs)."""
        if not addresses:
            raise ConfigError([f"{service}: no replica addresses configured"])
        self.service = service
        self.policy = policy or FollowPolicy()
        self.specs = list(addresses)
        self._connect = connect or _grpc_connect
        self.replicas: list[Replica] = []
        self._cond = threading.Condition()
        self._waiting = 0
        self._resolved_at = 0.0
        self._located: dict[str, str] = {}  # job id -> replica address
        self._discovered: set[str] = set()  # owners whose jobs were looked up on every replica
        self._discovery_lock = threading.Lock()
        self.health = ReplicaHealth(service)
        self._watchdog = _Watchdog(service, self.policy.silence_s)
        self.refresh()

    # --- replicas ----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Add replicas that appeared behind a ``dns:///`` name; drop idle ones that disappeared."""
        wanted = [a for spec in self.specs for a in resolve(spec)]
        with self._cond:
            self._resolved_at = time.monotonic()
            known = {r.address: r for r in self.replicas}
            kept = [r for r in self.replicas if r.address in wanted or r.in_flight > 0]
            for replica in self.replicas:
                if replica not in kept:
                    replica.channel.close()
            added = [self._replica(a) for a in dict.fromkeys(wanted) if a not in known]
            for replica in added:  # learn the capacity of a newcomer from one of its peers
                replica.capacity = max((r.capacity for r in kept), default=1)
            self.replicas = kept + added
            for replica in added:  # ask their health now: the answer is there when the first job is
                self.health.placeable(replica.address, replica.channel)
            self._cond.notify_all()
        if added:
            log.info(
                "replicas added", extra={"service": self.service, "replicas": [r.address for r in added]}
            )

    def _replica(self, address: str) -> Replica:
        stub, channel = self._connect(address)
        return Replica(address, stub, channel)

    @property
    def capacity(self) -> int:
        return sum(r.capacity for r in self.replicas)

    def demand(self) -> int:
        with self._cond:
            return sum(r.in_flight for r in self.replicas) + self._waiting

    def replicas_wanted(self) -> int:
        """Replicas that would serve :meth:`demand` at once (a replica runs ``capacity`` jobs, e.g. two
        trainings per GPU)."""
        with self._cond:
            per_replica = max([r.capacity for r in self.replicas] or [1])
        return -(-self.demand() // per_replica)

    def describe(self, objective: str, space: EvalSpace, wait_s: float = 60.0) -> TargetInfo:
        """Ask every replica for its target; all reachable ones must agree (results never mix)."""
        deadline = time.monotonic() + wait_s
        request = common_pb2.DescribeRequest(objective=objective, space=space_to_proto(space))
        dynamic = any(spec.startswith(DNS_PREFIX) for spec in self.specs)
        while True:
            # a dns:/// name that resolved to nothing yet (no trainer pod ready when the searcher started)
            # is looked up again here too, or a search would wait for its replicas forever
            if dynamic and time.monotonic() - self._resolved_at > RESOLVE_EVERY_S:
                self.refresh()
            answers: dict[str, common_pb2.DescribeResponse] = {}
            errors: dict[str, str] = {}
            for replica in list(self.replicas):
                try:
                    answer = replica.stub.Describe(request, timeout=self.policy.rpc_timeout_s)
                except grpc.RpcError as err:
                    error = error_from_rpc(err)
                    if isinstance(error, InvalidInput):
                        raise InvalidInput(f"{self.service} at {replica.address}: {error}") from None
                    errors[replica.address] = str(error)
                    continue
                replica.capacity = max(1, answer.capacity)
                replica.targets[objective] = answer.target.key
                answers[replica.address] = answer
            if answers:
                return self._agreed_target(objective, answers)
            if time.monotonic() >= deadline:
                raise Unavailable(f"no {self.service} replica reachable: {errors}")
            time.sleep(0.5)

    def _agreed_target(self, objective: str, answers: dict[str, common_pb2.DescribeResponse]) -> TargetInfo:
        keys = {a.target.key for a in answers.values()}
        if len(keys) > 1:
            detail = ", ".join(f"{addr}: {a.target.key}" for addr, a in answers.items())
            raise ConfigError(
                [
                    f"{self.service}: replicas measure {objective!r} on different targets ({detail}); "
                    "results from different hosts must not be mixed: give each target its own service"
                ]
            )
        return target_from_proto(next(iter(answers.values())).target)

    # --- evaluation ----------------------------------------------------------------------------------

    def evaluate(
        self,
        task: EvalTask,
        on_progress: ProgressSink,
        stop: threading.Event,
        avoid: frozenset[str] = frozenset(),
        timeout_s: float = 3600.0,
    ) -> EvalResult:
        job_id = task.key.job_id
        self._discover(task.owner)
        replica = self._acquire(job_id, avoid, stop)
        began = time.monotonic()
        lost = False
        try:
            reply = self._submit(replica, task)
            final = self._follow(replica, reply, task, on_progress, stop, began + timeout_s)
            return self._outcome(final, replica, reply.attached, began)
        except (WorkerLost, EvaluationFailed) as err:
            lost = retry.classify(err).bench
            raise
        finally:
            self._release(replica, job_id, lost)

    def cancel(self, owner: str, key: EvalKey | None = None) -> None:
        request = common_pb2.CancelJobRequest(job_id=key.job_id if key else "", owner=owner)
        for replica in list(self.replicas):
            try:
                replica.stub.CancelJob(request, timeout=self.policy.rpc_timeout_s)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    log.warning(
                        "cancel not delivered",
                        extra={"replica": replica.address, "owner": owner, "code": err.code().name},
                    )

    def _discover(self, owner: str) -> None:
        """Once per owner: learn which replicas hold its jobs (jobs a previous searcher started)."""
        if owner in self._discovered:
            return
        with self._discovery_lock:
            if owner in self._discovered:
                return
            request = common_pb2.ListJobsRequest(owner=owner)
            for replica in list(self.replicas):
                try:
                    reply = replica.stub.ListJobs(request, timeout=self.policy.rpc_timeout_s)
                except grpc.RpcError:
                    continue  # unreachable now: its jobs, if any, run elsewhere
                with self._cond:
                    for job in reply.jobs:
                        if job_state(job) in (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED):
                            self._located.setdefault(job.job_id, replica.address)
            self._discovered.add(owner)

    def _acquire(self, job_id: str, avoid: frozenset[str], stop: threading.Event) -> Replica:
        """The replica already holding ``job_id`` (joining it costs no slot), else a free slot on the
        least-loaded healthy replica, preferring those not in ``avoid``; waits while all are busy."""
        dynamic = any(spec.startswith(DNS_PREFIX) for spec in self.specs)
        with self._cond:
            while True:
                if dynamic and time.monotonic() - self._resolved_at > RESOLVE_EVERY_S:
                    self.refresh()
                if stop.is_set():
                    raise Cancelled("search stopped")
                now = time.monotonic()
                where = self._located.get(job_id)
                hold = False  # the holder's first health answer is on its way: no twin job meanwhile
                for replica in self.replicas:
                    if replica.address == where and replica.healthy(now) and where not in avoid:
                        serving = self.health.placeable(replica.address, replica.channel)
                        if serving:
                            return self._take(replica, job_id)
                        hold = serving is None
                healthy = [r for r in self.replicas if self._usable(r, now)]
                fresh = [r for r in healthy if r.address not in avoid]
                free = [r for r in (fresh or healthy) if r.in_flight < r.capacity and not hold]
                if free:
                    chosen = min(free, key=lambda r: (r.in_flight / r.capacity, random.random()))
                    taken = self._take(chosen, job_id)
                    if len(free) > 1 or chosen.in_flight < chosen.capacity:
                        self._cond.notify()  # a slot is left: the next waiter in line may take it
                    return taken
                metrics.PENDING.labels(self.service).inc()
                self._waiting += 1
                try:
                    self._cond.wait(timeout=0.25)
                finally:
                    self._waiting -= 1
                    metrics.PENDING.labels(self.service).dec()

    def _usable(self, replica: Replica, now: float) -> bool:
        """Not benched, and not NOT_SERVING by its own health."""
        return replica.healthy(now) and self.health.placeable(replica.address, replica.channel) is True

    def _take(self, replica: Replica, job_id: str) -> Replica:
        """Place ``job_id`` on ``replica`` (condition held): whoever asks for it next joins it there."""
        replica.jobs[job_id] += 1
        self._located[job_id] = replica.address
        self._publish()
        return replica

    def _release(self, replica: Replica, job_id: str, lost: bool) -> None:
        with self._cond:
            replica.jobs[job_id] -= 1
            if replica.jobs[job_id] <= 0:
                del replica.jobs[job_id]
                if self._located.get(job_id) == replica.address:
                    del self._located[job_id]
            if lost:
                replica.failures += 1
                backoff = min(MAX_BENCH_SECONDS, 0.5 * 2 ** (replica.failures - 1))
                replica.benched_until = time.monotonic() + backoff
            else:
                replica.failures = 0
            self._publish()
            # one slot freed: one waiter (the longest waiting), not all of them (with many searches
            # queued on a few replicas, waking every waiter per release costs more than the work)
            self._cond.notify()

    def _submit(self, replica: Replica, task: EvalTask) -> common_pb2.SubmitJobReply:
        request = common_pb2.SubmitJobRequest(request=task_to_request(task), owner=task.owner)
        try:
            reply = replica.stub.SubmitJob(request, timeout=self.policy.rpc_timeout_s)
        except grpc.RpcError as err:
            error = error_from_rpc(err)
            if isinstance(error, InvalidInput):
                raise EvaluationFailed(FailureKind.INVALID, str(error), replica.address) from None
            if isinstance(error, ArchNotEvaluable):
                raise EvaluationFailed(FailureKind.NOT_EVALUABLE, str(error), replica.address) from None
            if isinstance(error, Unavailable):  # UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED
                raise WorkerUnreachable(replica.address, f"submission failed: {error}") from None
            raise EvaluationFailed(
                FailureKind.ERROR, f"submission failed: {error}", replica.address
            ) from None
        job = reply.job
        # a candidate of a search begun before keys named the model asks for none (``""``)
        model = job.model if task.key.model else ""
        if (job.target, job.budget, model) != (task.key.target, task.key.budget, task.key.model):
            got = f"{job.target!r} / {job.budget!r} / model {job.model!r}"
            want = f"{task.key.target!r} / {task.key.budget!r} / model {task.key.model!r}"
            raise WorkerLost(replica.address, f"it evaluates for {got}, expected {want}")
        return reply

    def _follow(
        self,
        replica: Replica,
        reply: common_pb2.SubmitJobReply,
        task: EvalTask,
        on_progress: ProgressSink,
        stop: threading.Event,
        deadline: float,
    ) -> common_pb2.Job:
        """Watch the job until it ends, re-opening a broken or silent stream within ``reattach_s``."""
        job = reply.job
        lost_since: float | None = None
        last_error = ""
        while True:
            if not job_state(job).finished:
                on_progress(self._progress(task.key, replica, job, reply.attached))
                job_id = job.job_id
                try:
                    for job in self._watch(replica, job_id, stop, deadline, task):
                        lost_since = None
                        if job_state(job).finished:
                            break
                        on_progress(self._progress(task.key, replica, job, reply.attached))
                except _BrokenStreamError as err:
                    last_error = str(err)
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.NOT_FOUND:
                        raise WorkerLost(replica.address, "the worker lost the job (restarted?)") from None
                    last_error = f"{err.code().name}: {err.details()}"
            if job_state(job).finished:
                return job
            now = time.monotonic()
            lost_since = lost_since or now
            if now - lost_since > self.policy.reattach_s:
                raise WorkerLost(replica.address, f"unreachable for {now - lost_since:.0f} s ({last_error})")
            metrics.REATTACHES.labels(self.service).inc()
            log.info(
                "job stream broken, re-attaching",
                extra={"replica": replica.address, "job_id": job.job_id, "error": last_error},
            )
            if stop.wait(min(2.0, 0.2 * 2 ** min(5, int(now - lost_since)))):
                raise Cancelled("search stopped")

    def _watch(
        self, replica: Replica, job_id: str, stop: threading.Event, deadline: float, task: EvalTask
    ) -> Iterator[common_pb2.Job]:
        """The job's stream, read in this thread, under the pool's watchdog: silence past ``silence_s``
        breaks it, ``stop`` and the deadline end it (the deadline also gives up this owner's claim on the
        job)."""
        request = common_pb2.WatchJobRequest(job_id=job_id, heartbeat_s=self.policy.heartbeat_s)
        call = replica.stub.WatchJob(request)
        watch = self._watchdog.add(cast("grpc.Future[common_pb2.Job]", call), stop, deadline)
        try:
            try:
                for item in call:
                    watch.heard = time.monotonic()
                    yield item
            except grpc.RpcError:
                if watch.reason is None:
                    raise
            if watch.reason == _Watch.STOPPED:
                raise Cancelled("search stopped")
            if watch.reason == _Watch.DEADLINE:
                self.cancel(task.owner, task.key)
                raise EvaluationFailed("timeout", "ran past evaluation.timeout_s", replica.address)
            if watch.reason == _Watch.SILENT:
                raise _BrokenStreamError(f"no heartbeat for {self.policy.silence_s:.0f} s")
            raise _BrokenStreamError("stream ended before the job")
        finally:
            self._watchdog.remove(watch)
            cast("grpc.Future[common_pb2.Job]", call).cancel()

    def _outcome(self, job: common_pb2.Job, replica: Replica, attached: bool, began: float) -> EvalResult:
        state = job_state(job)
        if state == JobState.SUCCEEDED:
            wall = time.monotonic() - began
            on_worker = max(0.0, job.finished_at - job.created_at)
            return EvalResult(
                value=job.result.value,
                unit=job.result.unit,
                details=json.loads(job.result.details_json or "{}"),
                worker=job.worker,
                seconds=job.result.seconds,
                replica=replica.address,
                attached=attached,
                overhead_s=0.0 if attached else max(0.0, wall - on_worker),
            )
        if state == JobState.CANCELLED:
            raise WorkerLost(replica.address, f"the job was cancelled on the worker ({job.error})")
        raise EvaluationFailed(job_failure(job), job.error or "failed", replica.address)

    def _progress(self, key: EvalKey, replica: Replica, job: common_pb2.Job, attached: bool) -> EvalProgress:
        return EvalProgress(
            key, replica.address, str(job_state(job)), progress_from_proto(job.progress), attached
        )

    def _publish(self) -> None:
        """Export each replica's health, load and capacity (call with the condition held)."""
        now = time.monotonic()
        for r in self.replicas:
            metrics.REPLICA_UP.labels(self.service, r.address).set(1 if r.healthy(now) else 0)
            metrics.REPLICA_IN_FLIGHT.labels(self.service, r.address).set(r.in_flight)
            metrics.REPLICA_CAPACITY.labels(self.service, r.address).set(r.capacity)

    def close(self) -> None:
        for replica in self.replicas:
            replica.channel.close()


def _grpc_connect(address: str) -> tuple[common_pb2_grpc.EvaluatorStub, grpc.Channel]:
    channel = make_channel(address)
    return common_pb2_grpc.EvaluatorStub(channel), channel


class _BrokenStreamError(Exception):
    """The watch stream ended, failed or went silent before the job did."""
