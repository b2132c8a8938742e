"""Scale the trainer Deployment between ``min`` and ``max`` replicas by the searcher's pending work.

The searcher knows how many trainer evaluations are running and waiting; the desired replica count is
that demand divided by the slots per replica, clamped to [min, max]. Scale-down waits for
``cooldown_s`` of lower demand so a barrier between iterations does not shed replicas. The RBAC it
needs is ``get``/``patch`` on ``deployments/scale`` of that one Deployment
(``deploy/k8s/components/autoscale``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from facenas.errors import ConfigError

log = logging.getLogger(__name__)


class ScaleApi(Protocol):
    """The part of ``kubernetes.client.AppsV1Api`` this needs."""

    def read_namespaced_deployment_scale(self, name: str, namespace: str) -> Any: ...

    def patch_namespaced_deployment_scale(self, name: str, namespace: str, body: Any) -> Any: ...


@dataclass(frozen=True)
class AutoscalePolicy:
    deployment: str = "trainer"
    namespace: str = "facenas"
    min_replicas: int = 1
    max_replicas: int = 8
    slots_per_replica: int = 1
    cooldown_s: float = 300.0
    interval_s: float = 15.0

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.min_replicas <= self.max_replicas <= 1000:
            problems.append(
                f"autoscale: need 0 <= min ({self.min_replicas}) <= max ({self.max_replicas}) <= 1000"
            )
        if self.slots_per_replica < 1:
            problems.append(f"autoscale: slots_per_replica {self.slots_per_replica} must be >= 1")
        if problems:
            raise ConfigError(problems)

    def desired(self, demand: int) -> int:
        """Replicas for ``demand`` running + waiting trainer evaluations."""
        wanted = math.ceil(max(0, demand) / self.slots_per_replica)
        return min(self.max_replicas, max(self.min_replicas, wanted))


def parse_range(text: str) -> tuple[int, int]:
    """``"1:8"`` -> (1, 8)."""
    lo, sep, hi = text.partition(":")
    if not sep or not lo.isdigit() or not hi.isdigit():
        raise ConfigError([f"--autoscale-trainers: {text!r} must be MIN:MAX, e.g. 1:8"])
    return int(lo), int(hi)


class TrainerAutoscaler:
    """Periodically reconciles the trainer Deployment's replicas with ``demand()``."""

    def __init__(self, api: ScaleApi, policy: AutoscalePolicy, demand: Callable[[], int]) -> None:
        self.api = api
        self.policy = policy
        self.demand = demand
        self._low_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reconcile(self, now: float | None = None) -> int | None:
        """One step: returns the replica count set, or None when nothing changed."""
        now = time.monotonic() if now is None else now
        p = self.policy
        current = int(self.api.read_namespaced_deployment_scale(p.deployment, p.namespace).spec.replicas or 0)
        target = p.desired(self.demand())
        if target >= current:
            self._low_since = None
            if target == current:
                return None
        else:
            if self._low_since is None:
                self._low_since = now
            if now - self._low_since < p.cooldown_s:
                return None
            self._low_since = None
        self.api.patch_namespaced_deployment_scale(p.deployment, p.namespace, {"spec": {"replicas": target}})
        log.info("scaled trainers", extra={"from": current, "to": target, "deployment": p.deployment})
        return target

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.policy.interval_s):
                try:
                    self.reconcile()
                except Exception as err:  # the API may be briefly unavailable; try again next round
                    log.warning("autoscale step failed", extra={"error": str(err)})

        self._thread = threading.Thread(target=loop, name="trainer-autoscaler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def in_cluster_api() -> ScaleApi:
    """AppsV1Api from the pod's service account; outside a pod (no ``KUBERNETES_SERVICE_HOST``/``PORT``, no
    mounted service-account token) a :class:`ConfigError` that says the autoscaler needs the cluster API."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException as err:
        raise ConfigError(
            [
                "--autoscale-trainers (FACENAS_AUTOSCALE_TRAINERS): scaling the trainer Deployment needs the "
                f"Kubernetes API, which this process cannot reach: {err} (it runs outside a Kubernetes pod, "
                "or without the service-account token deploy/k8s/components/autoscale mounts). Leave "
                "--autoscale-trainers unset to run with a fixed set of trainers."
            ]
        ) from err
    api: ScaleApi = client.AppsV1Api()
    return api
