"""Health that tells the truth: dependency probes, the monitor that runs them, and what follows from them.

A :class:`Probe` names one dependency a service needs (its database, boards, dataset, ...) and checks it:
``check()`` returns None while the dependency is usable, else why not. A :class:`HealthMonitor` runs every
probe at start-up and then every ``interval_s`` seconds on a background thread. While any probe fails:

* every gRPC health name of the server (``""`` and each registered service) answers NOT_SERVING, with the
  reason in the trailing metadata ``facenas-health-reason`` (:class:`TruthfulHealthServicer`);
* RPCs that need the failing dependency (:attr:`Probe.guards`) are refused with UNAVAILABLE and the
  reason (:class:`DependencyUnavailable`) instead of failing somewhere inside;
* ``facenas_dependency_up{dependency}`` is 0, and the transition is logged with the reason.

When the probe passes again, all of that is undone. The name ``liveness`` stays SERVING for as long as the
process serves: a Kubernetes liveness probe asks for it, so a missing dependency makes a pod unready
without getting it restarted.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Gauge

from facenas.errors import Unavailable

log = logging.getLogger(__name__)

#: The health name that stays SERVING while the process serves at all (Kubernetes liveness).
LIVENESS = "liveness"
#: Trailing metadata key of a NOT_SERVING health answer: why.
REASON_KEY = "facenas-health-reason"
DEFAULT_INTERVAL_S = 5.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

DEPENDENCY_UP = Gauge(
    "facenas_dependency_up",
    "1 while a dependency this service needs (database, boards, dataset, ...) is usable, 0 while not.",
    ["dependency"],
)

#: A dependency check: None while usable, else a one-line reason.
Check = Callable[[], str | None]


@dataclass(frozen=True)
class Probe:
    """One dependency: ``check`` says whether it is usable; ``guards`` names the RPCs that need it
    (``"pkg.Service"`` for all its methods, ``"pkg.Service/Method"`` for one). A check that raises or
    runs past ``timeout_s`` counts as failed."""

    name: str
    check: Check
    guards: tuple[str, ...] = ()
    timeout_s: float = 10.0

    def guards_call(self, service: str, method: str) -> bool:
        return service in self.guards or f"{service}/{method}" in self.guards


class DependencyUnavailable(Unavailable):
    """A call needs a dependency that is down (mapped to UNAVAILABLE; the message says which and why)."""

    def __init__(self, dependency: str, reason: str) -> None:
        self.dependency = dependency
        self.reason = reason
        super().__init__(f"{dependency} unavailable: {reason}")


class HealthTarget(Protocol):
    """What the monitor drives: :class:`facenas.rpc.server.RunningServer`."""

    @property
    def health(self) -> Any: ...

    def set_serving(self, serving: bool) -> None: ...


class TruthfulHealthServicer(health.HealthServicer):
    """gRPC's health servicer, plus :data:`LIVENESS` (SERVING while the process serves) and the reason of
    a NOT_SERVING answer in the trailing metadata :data:`REASON_KEY`."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self.reason_source: Callable[[], str] = lambda: ""
        self.set(LIVENESS, SERVING)

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        response = super().Check(request, context)
        if response.status == NOT_SERVING:
            reason = self.reason_source()
            if reason:
                context.set_trailing_metadata(((REASON_KEY, _header_text(reason)),))
        return response


class HealthMonitor:
    """Runs ``probes`` now and every ``interval_s`` seconds; serving while every one passes."""

    def __init__(self, probes: Sequence[Probe], interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        names = [p.name for p in probes]
        if len(set(names)) != len(names):
            raise ValueError(f"probe names must be unique: {names}")
        self.probes = list(probes)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._checking = threading.Lock()  # one round of checks at a time
        self._failing: dict[str, str] = {}  # probe name -> reason
        self._down_since: dict[str, float] = {}
        self._running: dict[str, threading.Thread] = {}  # a check that has not returned yet
        self._target: HealthTarget | None = None
        self._published: bool | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- state ---------------------------------------------------------------------------------------

    def failing(self) -> dict[str, str]:
        """The failing dependencies and why."""
        with self._lock:
            return dict(self._failing)

    @property
    def serving(self) -> bool:
        with self._lock:
            return not self._failing

    def reason(self) -> str:
        """Why the service is not serving (``""`` while it is)."""
        with self._lock:
            return self._reason_locked()

    def require(self, service: str, method: str) -> None:
        """Raise DependencyUnavailable when a dependency the call needs is down."""
        with self._lock:
            for probe in self.probes:
                if probe.name in self._failing and probe.guards_call(service, method):
                    raise DependencyUnavailable(probe.name, self._failing[probe.name])

    def guarded(self, service: str, method: str) -> bool:
        return any(p.guards_call(service, method) for p in self.probes)

    # --- running -------------------------------------------------------------------------------------

    def check_now(self) -> dict[str, str]:
        """Run every probe once, apply the outcome and return the failing dependencies."""
        with self._checking:
            results = {probe.name: self._run(probe) for probe in self.probes}
            now = time.monotonic()
            with self._lock:
                for name, reason in results.items():
                    self._transition(name, reason, now)
                failing = dict(self._failing)
            self._publish()
        return failing

    def start(self, target: HealthTarget) -> None:
        """Publish the state to ``target`` and keep it true on a background thread until :meth:`stop`."""
        if isinstance(target.health, TruthfulHealthServicer):
            target.health.reason_source = self.reason
        with self._checking:
            with self._lock:
                self._target = target
            self._publish()
        if self.probes and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="health-monitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop checking and publishing (before the server drains: it sets NOT_SERVING itself). A check
        still running publishes nothing any more."""
        self._stop.set()
        with self._lock:
            self._target = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_now()
            except Exception:  # never let the monitor die: a dead monitor would freeze the last state
                log.exception("health check failed")

    def _run(self, probe: Probe) -> str | None:
        """The probe's verdict, within its timeout (a check still running from before counts as failed)."""
        previous = self._running.get(probe.name)
        if previous is not None:
            if previous.is_alive():
                return f"the check has not answered for more than {probe.timeout_s:g} s"
            del self._running[probe.name]
        verdict: list[str | None] = []

        def run() -> None:
            try:
                result = probe.check()
                verdict.append(None if result is None else result or "unusable")
            except Exception as err:
                verdict.append(f"the check failed: {type(err).__name__}: {err}")

        thread = threading.Thread(target=run, name=f"probe-{probe.name}", daemon=True)
        thread.start()
        thread.join(probe.timeout_s)
        if thread.is_alive():
            self._running[probe.name] = thread
            return f"the check did not answer within {probe.timeout_s:g} s"
        return verdict[0]

    def _transition(self, name: str, reason: str | None, now: float) -> None:
        """Record one probe's verdict, logging a change (lock held)."""
        DEPENDENCY_UP.labels(name).set(0 if reason else 1)
        was = self._failing.get(name)
        if reason is None:
            if was is not None:
                del self._failing[name]
                down_s = now - self._down_since.pop(name, now)
                log.info("dependency up", extra={"dependency": name, "down_s": round(down_s, 3)})
            return
        self._failing[name] = reason
        if was is None:
            self._down_since[name] = now
            log.warning("dependency down", extra={"dependency": name, "reason": reason})
        elif was != reason:
            log.warning("dependency still down", extra={"dependency": name, "reason": reason})

    def _publish(self) -> None:
        with self._lock:  # held while setting: once stop() has the lock, nothing is published any more
            target, serving, reason = self._target, not self._failing, self._reason_locked()
            if target is None or self._stop.is_set():
                return
            changed, self._published = serving != self._published, serving
            target.set_serving(serving)
        if changed:
            if serving:
                log.info("health SERVING")
            else:
                log.warning("health NOT_SERVING", extra={"reason": reason})

    def _reason_locked(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in self._failing.items())

    # --- guarding RPCs -------------------------------------------------------------------------------

    def guard(self, registrations: Sequence[Any]) -> list[Any]:
        """``registrations`` (add function, servicer, service name) with each guarded servicer wrapped so
        that its guarded methods raise DependencyUnavailable while a dependency they need is down."""
        out = []
        for add, servicer, service in registrations:
            if any(_names_service(p, service) for p in self.probes):
                servicer = _GuardedServicer(servicer, service, self)
            out.append((add, servicer, service))
        return out


def _names_service(probe: Probe, service: str) -> bool:
    return any(g == service or g.startswith(f"{service}/") for g in probe.guards)


class _GuardedServicer:
    """A servicer whose guarded methods first ask the monitor (``add_XServicer_to_server`` reads the
    methods as attributes, so a proxy is enough)."""

    def __init__(self, servicer: Any, service: str, monitor: HealthMonitor) -> None:
        self._servicer = servicer
        self._service = service
        self._monitor = monitor

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._servicer, name)
        if not callable(attr) or not self._monitor.guarded(self._service, name):
            return attr
        service, monitor = self._service, self._monitor

        @functools.wraps(attr)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            monitor.require(service, name)
            return attr(*args, **kwargs)

        return guarded


# --- the client side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteHealth:
    """What a server's gRPC health said: ``status`` is a ServingStatus name (SERVING, NOT_SERVING,
    SERVICE_UNKNOWN, ...), or the status code name of a failed call when ``answered`` is False."""

    status: str
    reason: str = ""
    answered: bool = True

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

    @property
    def not_serving(self) -> bool:
        return self.status == "NOT_SERVING"

    def describe(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else self.status


def check_health(channel: grpc.Channel, service: str = "", timeout_s: float = 2.0) -> RemoteHealth:
    """Ask the server behind ``channel`` for the health of ``service`` with a deadline."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response, call = stub.Check.with_call(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
    except grpc.RpcError as err:
        return health_from_error(err)
    return health_from_answer(response, call.trailing_metadata())


def health_from_answer(response: health_pb2.HealthCheckResponse, trailing: Any) -> RemoteHealth:
    status = str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    reason = next((str(value) for key, value in trailing or () if key == REASON_KEY), "")
    return RemoteHealth(status, reason)


def health_from_error(err: grpc.RpcError) -> RemoteHealth:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return RemoteHealth(code.name, details or "", answered=False)


def wait_serving(
    channel: grpc.Channel,
    deadline: float,
    not_serving_s: float,
    what: str,
    any_answer: bool = False,
    poll_s: float = 0.05,
) -> RemoteHealth:
    """Poll the health of the server behind ``channel`` until it is SERVING (or, with ``any_answer``,
    until it answers at all); raises Unavailable when it is not by ``deadline``, or has answered
    NOT_SERVING for ``not_serving_s`` seconds (naming the reason it gives)."""
    not_serving_since: float | None = None
    while True:
        answer = check_health(channel, timeout_s=2.0)
        now = time.monotonic()
        if answer.serving or (any_answer and answer.answered):
            return answer
        if answer.not_serving:
            not_serving_since = not_serving_since or now
            if now - not_serving_since >= not_serving_s:
                raise Unavailable(f"{what} is NOT_SERVING: {answer.reason or 'no reason given'}")
        else:
            not_serving_since = None
        if now > deadline:
            raise Unavailable(f"{what} is not SERVING ({answer.describe()})")
        time.sleep(poll_s)


def _header_text(text: str, limit: int = 1024) -> str:
    """``text`` as a metadata value: printable ASCII, bounded."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    return printable[:limit]
