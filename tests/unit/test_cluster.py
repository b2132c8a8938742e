"""Trainer autoscaling and the cluster status report, against fake Kubernetes APIs."""

from __future__ import annotations

import json
from types import SimpleNamespace as Obj
from typing import Any

import pytest
from typer.testing import CliRunner

from facenas.cli.main import app
from facenas.cluster.autoscale import AutoscalePolicy, TrainerAutoscaler, parse_range
from facenas.cluster.status import cluster_status
from facenas.errors import ConfigError


class FakeScaleApi:
    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.patches: list[int] = []

    def read_namespaced_deployment_scale(self, name: str, namespace: str) -> Any:
        assert (name, namespace) == ("trainer", "facenas")
        return Obj(spec=Obj(replicas=self.replicas))

    def patch_namespaced_deployment_scale(self, name: str, namespace: str, body: Any) -> Any:
        self.replicas = body["spec"]["replicas"]
        self.patches.append(self.replicas)


def test_scales_up_at_once_and_down_after_cooldown() -> None:
    api, demand = FakeScaleApi(1), [5]
    scaler = TrainerAutoscaler(
        api, AutoscalePolicy(min_replicas=1, max_replicas=4, cooldown_s=60), lambda: demand[0]
    )
    assert scaler.reconcile(now=0) == 4  # clamped to max
    demand[0] = 0
    assert scaler.reconcile(now=10) is None  # lower demand: wait for the cooldown
    assert scaler.reconcile(now=50) is None
    demand[0] = 3
    assert scaler.reconcile(now=55) is None  # demand came back: cooldown restarts, no churn
    demand[0] = 0
    assert scaler.reconcile(now=60) is None
    assert scaler.reconcile(now=121) == 1  # floor at min
    assert api.patches == [4, 1]


def test_policy_and_range_validation() -> None:
    assert parse_range("2:6") == (2, 6)
    assert AutoscalePolicy(min_replicas=2, max_replicas=6, slots_per_replica=2).desired(7) == 4
    for bad in ("6", "a:b", "3-4"):
        with pytest.raises(ConfigError):
            parse_range(bad)
    with pytest.raises(ConfigError):
        AutoscalePolicy(min_replicas=5, max_replicas=2)


def _deployment(name: str, desired: int, ready: int, generation: int = 2, observed: int = 2) -> Any:
    status = Obj(
        ready_replicas=ready, updated_replicas=ready, available_replicas=ready, observed_generation=observed
    )
    return Obj(metadata=Obj(name=name, generation=generation), spec=Obj(replicas=desired), status=status)


def _endpoints(name: str, ips: list[str], port: int) -> Any:
    subset = Obj(addresses=[Obj(ip=ip) for ip in ips], ports=[Obj(port=port)])
    return Obj(metadata=Obj(name=name), subsets=[subset])


class FakeApis:
    def __init__(self) -> None:
        self.deployments = [
            _deployment("searcher", 1, 1),
            _deployment("trainer", 3, 2),
            _deployment("other", 1, 1),
        ]
        self.endpoints = [_endpoints("trainer", ["10.0.0.2", "10.0.0.1"], 50061)]

    def list_namespaced_deployment(self, namespace: str) -> Any:
        return Obj(items=self.deployments)

    def list_namespaced_endpoints(self, namespace: str) -> Any:
        return Obj(items=self.endpoints)


def test_cluster_status_reports_rollouts_and_endpoints() -> None:
    apis = FakeApis()
    status = {s.name: s for s in cluster_status(apis, apis)}
    assert set(status) == {"searcher", "trainer"}
    assert status["searcher"].rolled_out and not status["trainer"].rolled_out
    assert status["trainer"].endpoints == ("10.0.0.1:50061", "10.0.0.2:50061")


def test_cluster_status_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    apis = FakeApis()
    monkeypatch.setattr("facenas.cluster.status.load_apis", lambda kubeconfig=None: (apis, apis))
    result = CliRunner().invoke(app, ["cluster", "status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["name"] for s in data["services"]] == ["searcher", "trainer"]

    def unreachable(kubeconfig: str | None = None) -> Any:
        raise OSError("no cluster")

    monkeypatch.setattr("facenas.cluster.status.load_apis", unreachable)
    result = CliRunner().invoke(app, ["cluster", "status"])
    assert result.exit_code == 2 and "cannot read the cluster" in result.stderr
