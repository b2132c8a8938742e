"""Dispatch of evaluations to the replicas of each objective service.

``ReplicaPool`` holds every replica of one service (trainer, latency_cpu, latency_snp). A call takes a free
slot on the least-loaded healthy replica (capacity from ``Describe``), and when a replica fails
(unreachable, killed mid-evaluation, deadline) it is benched with exponential backoff and the call moves
to another replica, up to ``max_attempts``. A request the service rejects as invalid fails at once.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from facenas.errors import Cancelled, ConfigError, InvalidInput, Unavailable
from facenas.rpc.client import make_channel
from facenas.rpc.status import error_from_rpc
from facenas.search import metrics
from facenas.v1 import common_pb2, common_pb2_grpc

log = logging.getLogger(__name__)

#: Failures that say nothing about the request itself: try another replica.
REPLICA_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
MAX_BENCH_SECONDS = 30.0


@dataclass
class Replica:
    """One replica of a service and what we know of its health."""

    address: str
    stub: common_pb2_grpc.EvaluatorStub
    channel: grpc.Channel
    capacity: int = 1
    in_flight: int = 0
    failures: int = 0
    benched_until: float = 0.0
    busy_seconds: float = 0.0
    targets: dict[str, str] = field(default_factory=dict)

    def usable(self, now: float) -> bool:
        return self.benched_until <= now and self.in_flight < self.capacity


@dataclass(frozen=True)
class Outcome:
    """A successful evaluation and where it ran."""

    response: common_pb2.EvaluateResponse
    replica: str
    attempts: int
    rpc_seconds: float  # the successful call, send to reply (worker time included)


def _wait(
    future: grpc.Future[common_pb2.EvaluateResponse], cancelled: Callable[[], bool]
) -> common_pb2.EvaluateResponse:
    """Wait for a call, cancelling it (the worker then stops its work) when the search is cancelled."""
    while True:
        try:
            result: common_pb2.EvaluateResponse = future.result(timeout=0.25)
            return result
        except grpc.FutureTimeoutError:
            if cancelled():
                future.cancel()
                raise Cancelled("search cancelled") from None


DNS_PREFIX = "dns:///"
RESOLVE_EVERY_S = 15.0


def resolve(spec: str) -> list[str]:
    """``host:port`` is one replica; ``dns:///name:port`` is one replica per IPv4/IPv6 address the name
    resolves to (a Kubernetes headless Service gives every ready pod)."""
    if not spec.startswith(DNS_PREFIX):
        return [spec]
    host, sep, port = spec[len(DNS_PREFIX) :].rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError([f"{spec}: expected dns:///NAME:PORT"])
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as err:
        log.warning("cannot resolve replicas", extra={"dns_name": host, "error": str(err)})
        return []
    addresses = {str(info[4][0]) for info in infos}
    return sorted(f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses)


class ReplicaPool:
    """All replicas of one objective service; ``dns:///`` names are re-resolved as pods come and go."""

    def __init__(self, service: str, addresses: Sequence[str], rpc_timeout: float = 10.0) -> None:
        if not addresses:
            raise ConfigError([f"{service}: no replica addresses configured"])
        self.service = service
        self.rpc_timeout = rpc_timeout
        self.specs = list(addresses)
        self.replicas: list[Replica] = []
        self._cond = threading.Condition()
        self._waiting = 0
        self._resolved_at = 0.0
        self.refresh()
        self.started = time.monotonic()

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
            self._cond.notify_all()
        if added:
            log.info(
                "replicas added", extra={"service": self.service, "replicas": [r.address for r in added]}
            )

    @staticmethod
    def _replica(address: str) -> Replica:
        channel = make_channel(address)
        return Replica(address, common_pb2_grpc.EvaluatorStub(channel), channel)

    @property
    def capacity(self) -> int:
        return sum(r.capacity for r in self.replicas)

    def demand(self) -> int:
        """Evaluations running plus waiting for a slot (what replicas are needed for)."""
        with self._cond:
            return sum(r.in_flight for r in self.replicas) + self._waiting

    def busy_seconds(self) -> float:
        with self._cond:
            return sum(r.busy_seconds for r in self.replicas)

    def describe(
        self, objective: str, space: common_pb2.SearchSpace, wait_s: float = 60.0
    ) -> common_pb2.Target:
        """Ask every replica for its target; all reachable ones must agree (results never mix)."""
        deadline = time.monotonic() + wait_s
        request = common_pb2.DescribeRequest(objective=objective, space=space)
        while True:
            answers: dict[str, common_pb2.DescribeResponse] = {}
            errors: dict[str, str] = {}
            for replica in self.replicas:
                try:
                    answer = replica.stub.Describe(request, timeout=self.rpc_timeout)
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

    def _agreed_target(
        self, objective: str, answers: dict[str, common_pb2.DescribeResponse]
    ) -> common_pb2.Target:
        keys = {a.target.key for a in answers.values()}
        if len(keys) > 1:
            detail = ", ".join(f"{addr}: {a.target.key}" for addr, a in answers.items())
            raise ConfigError(
                [
                    f"{self.service}: replicas measure {objective!r} on different targets ({detail}); "
                    "results from different hosts must not be mixed: give each target its own service"
                ]
            )
        return next(iter(answers.values())).target

    def evaluate(
        self,
        request: common_pb2.EvaluateRequest,
        timeout: float,
        max_attempts: int,
        cancelled: Callable[[], bool],
        on_retry: Callable[[str, str, int], None] | None = None,
    ) -> Outcome:
        """Run ``request`` on some replica, moving to another one when a replica fails."""
        tried: list[str] = []
        last_error = ""
        for attempt in range(1, max_attempts + 1):
            replica = self._acquire(tried, cancelled)
            tried.append(replica.address)
            began = time.monotonic()
            try:
                response = _wait(replica.stub.Evaluate.future(request, timeout=timeout), cancelled)
            except Cancelled:
                self._release(replica, time.monotonic() - began, failed=False)
                raise
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
                error = error_from_rpc(err)
                self._release(replica, time.monotonic() - began, failed=code in REPLICA_FAILURES)
                if code not in REPLICA_FAILURES:
                    raise error from None
                last_error = f"{replica.address}: {code.name}: {error}"
                log.warning(
                    "evaluation failed on replica", extra={"replica": replica.address, "code": code.name}
                )
                metrics.RETRIES.labels(self.service).inc()
                if on_retry is not None and attempt < max_attempts:
                    on_retry(replica.address, last_error, attempt)
                continue
            self._release(replica, time.monotonic() - began, failed=False)
            return Outcome(response, replica.address, attempt, time.monotonic() - began)
        raise Unavailable(f"{self.service}: gave up after {max_attempts} attempts; last error {last_error}")

    def _acquire(self, tried: list[str], cancelled: Callable[[], bool]) -> Replica:
        """A free slot on the least-loaded healthy replica; a replica this call already failed on is
        used again only when no other replica is healthy (busy ones are waited for instead)."""
        dynamic = any(spec.startswith(DNS_PREFIX) for spec in self.specs)
        with self._cond:  # reentrant: refresh() may run while it is held
            while True:
                if dynamic and time.monotonic() - self._resolved_at > RESOLVE_EVERY_S:
                    self.refresh()
                if cancelled():
                    raise Cancelled("search cancelled")
                now = time.monotonic()
                healthy = [r for r in self.replicas if r.benched_until <= now]
                fresh = [r for r in healthy if r.address not in tried]
                pool = fresh if fresh else healthy
                free = [r for r in pool if r.in_flight < r.capacity]
                if free:
                    chosen = min(free, key=lambda r: (r.in_flight / r.capacity, random.random()))
                    chosen.in_flight += 1
                    self.publish()
                    return chosen
                metrics.PENDING.labels(self.service).inc()
                self._waiting += 1
                try:
                    self._cond.wait(timeout=0.25)
                finally:
                    self._waiting -= 1
                    metrics.PENDING.labels(self.service).dec()

    def _release(self, replica: Replica, seconds: float, failed: bool) -> None:
        with self._cond:
            replica.in_flight -= 1
            replica.busy_seconds += seconds
            if failed:
                replica.failures += 1
                backoff = min(MAX_BENCH_SECONDS, 0.5 * 2 ** (replica.failures - 1))
                replica.benched_until = time.monotonic() + backoff
            else:
                replica.failures = 0
                replica.benched_until = 0.0
            self.publish()
            self._cond.notify_all()

    def publish(self) -> None:
        """Export each replica's health, load and capacity (call with the condition held)."""
        now = time.monotonic()
        for r in self.replicas:
            metrics.REPLICA_UP.labels(self.service, r.address).set(1 if r.benched_until <= now else 0)
            metrics.REPLICA_IN_FLIGHT.labels(self.service, r.address).set(r.in_flight)
            metrics.REPLICA_CAPACITY.labels(self.service, r.address).set(r.capacity)

    def close(self) -> None:
        for replica in self.replicas:
            replica.channel.close()
