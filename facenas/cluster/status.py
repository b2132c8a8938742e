"""``facenas cluster status``: rollouts, ready replicas and endpoints of every facenas service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SERVICES = ("searcher", "store", "trainer", "latency-cpu", "latency-snp")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    desired: int
    ready: int
    updated: int
    available: int
    rolled_out: bool
    endpoints: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "endpoints": list(self.endpoints)}


def cluster_status(apps: Any, core: Any, namespace: str = "facenas") -> list[ServiceStatus]:
    """Status of the facenas Deployments in ``namespace`` (``apps``: AppsV1Api, ``core``: CoreV1Api)."""
    deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment(namespace).items}
    endpoints = {e.metadata.name: e for e in core.list_namespaced_endpoints(namespace).items}
    out = []
    for name in SERVICES:
        d = deployments.get(name)
        if d is None:
            continue
        desired = int(d.spec.replicas or 0)
        st = d.status
        ready, updated, available = (
            int(x or 0) for x in (st.ready_replicas, st.updated_replicas, st.available_replicas)
        )
        generation_seen = (st.observed_generation or 0) >= (d.metadata.generation or 0)
        rolled_out = generation_seen and updated == desired and available == desired
        out.append(
            ServiceStatus(
                name, desired, ready, updated, available, rolled_out, _addresses(endpoints.get(name))
            )
        )
    return out


def _addresses(endpoint: Any) -> tuple[str, ...]:
    if endpoint is None:
        return ()
    found: list[str] = []
    for subset in endpoint.subsets or []:
        ports = [p.port for p in subset.ports or []]
        for address in subset.addresses or []:
            found.extend(f"{address.ip}:{port}" for port in ports)
    return tuple(sorted(found))


def load_apis(kubeconfig: str | None = None) -> tuple[Any, Any]:
    """AppsV1Api and CoreV1Api from a kubeconfig (default) or the pod's service account."""
    from kubernetes import client, config

    try:
        config.load_kube_config(config_file=kubeconfig)
    except Exception:
        config.load_incluster_config()
    return client.AppsV1Api(), client.CoreV1Api()
