"""What each replica's gRPC health says, for :class:`~facenas.search.dispatch.ReplicaPool`.

A replica that answers NOT_SERVING (a missing dataset, no board attached, a draining process...) gets no
new job until it answers SERVING again: the pool treats it as benched. Answers are asked for with a
deadline and cached for ``ttl_s``; a stale answer is still used while the next one is on its way, so
placing a job never waits on a health call. A replica that does not answer, or serves no health, is left
to the pool's own judgement (calls that fail bench it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Gauge

from facenas.rpc.health import RemoteHealth, health_from_answer, health_from_error

log = logging.getLogger(__name__)

REPLICA_SERVING = Gauge(
    "facenas_replica_serving",
    "0 while a replica's gRPC health says NOT_SERVING (it gets no new jobs), else 1.",
    ["service", "replica"],
)

HEALTH_TTL_S = 2.0
HEALTH_TIMEOUT_S = 2.0


@dataclass
class _Entry:
    health: RemoteHealth | None = None
    checked_at: float = 0.0
    asked_at: float | None = None  # a check in flight since


class ReplicaHealth:
    """The cached gRPC health (the server as a whole, ``""``) of each replica of one service."""

    def __init__(
        self, service: str, ttl_s: float = HEALTH_TTL_S, timeout_s: float = HEALTH_TIMEOUT_S
    ) -> None:
        self.service = service
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def placeable(self, address: str, channel: grpc.Channel) -> bool | None:
        """True when the replica may take new jobs, False while it answers NOT_SERVING, None until its
        first answer arrives (bounded by the deadline: no answer then counts as True)."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.setdefault(address, _Entry())
            if entry.asked_at is not None and now - entry.asked_at > self.timeout_s + 1.0:
                entry.asked_at = None  # the answer never came (a channel that cannot call): ask again
                entry.health = entry.health or RemoteHealth("UNKNOWN", "no answer", answered=False)
            ask = entry.asked_at is None and (entry.health is None or now - entry.checked_at >= self.ttl_s)
            if ask:
                entry.asked_at = now
            health = entry.health
        if ask:
            self._ask(address, channel)
            with self._lock:
                health = self._entries[address].health  # answered at once (e.g. a closed channel)
        if health is None:
            return None
        return not health.not_serving

    def status(self, address: str) -> RemoteHealth | None:
        """The last answer of ``address`` (None before the first)."""
        with self._lock:
            entry = self._entries.get(address)
            return entry.health if entry else None

    def forget(self, address: str) -> None:
        with self._lock:
            self._entries.pop(address, None)

    def _ask(self, address: str, channel: grpc.Channel) -> None:
        request = health_pb2.HealthCheckRequest(service="")
        try:
            future = health_pb2_grpc.HealthStub(channel).Check.future(request, timeout=self.timeout_s)
        except Exception as err:  # not a usable channel: no opinion
            self._record(address, RemoteHealth("UNKNOWN", f"{type(err).__name__}: {err}", answered=False))
            return
        future.add_done_callback(lambda done: self._record(address, _outcome(done)))

    def _record(self, address: str, health: RemoteHealth) -> None:
        with self._lock:
            entry = self._entries.get(address)
            if entry is None:
                return
            before = entry.health
            entry.health, entry.checked_at, entry.asked_at = health, time.monotonic(), None
        REPLICA_SERVING.labels(self.service, address).set(0 if health.not_serving else 1)
        was_down = before is not None and before.not_serving
        if health.not_serving and not was_down:
            log.warning(
                "replica NOT_SERVING: no new jobs for it",
                extra={"service": self.service, "replica": address, "reason": health.reason},
            )
        elif was_down and not health.not_serving:
            log.info(
                "replica serving again",
                extra={"service": self.service, "replica": address, "status": health.status},
            )


def _outcome(future: Any) -> RemoteHealth:
    try:
        response = future.result()
    except grpc.RpcError as err:
        return health_from_error(err)
    except Exception as err:  # cancelled (the channel closed)
        return RemoteHealth("UNKNOWN", f"{type(err).__name__}: {err}", answered=False)
    return health_from_answer(response, future.trailing_metadata())
