"""deploy/k8s/components/autoscale outside a cluster: the searcher it configures needs the Kubernetes API,
and says so (exit status 2, the reason on stderr) instead of failing with a traceback. The same start-up,
in the searcher image with the component's environment, is checked by tests/images."""

from __future__ import annotations

import pytest

from facenas.cluster.autoscale import in_cluster_api
from facenas.errors import ConfigError
from services.searcher.server import main

NOT_IN_A_POD = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def test_in_cluster_api_outside_a_pod_names_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NOT_IN_A_POD:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as raised:
        in_cluster_api()
    (problem,) = raised.value.problems
    assert problem.startswith("--autoscale-trainers (FACENAS_AUTOSCALE_TRAINERS): ")
    assert "needs the Kubernetes API" in problem and "Service host/port is not set" in problem


def test_searcher_with_autoscale_outside_a_pod_cannot_start_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in NOT_IN_A_POD:
        monkeypatch.delenv(name, raising=False)
    # the component's environment (searcher-autoscale.yaml), a trainer address and no /metrics endpoint
    monkeypatch.setenv("FACENAS_AUTOSCALE_TRAINERS", "1:8")
    monkeypatch.setenv("FACENAS_TRAINER_DEPLOYMENT", "trainer")
    monkeypatch.setenv("FACENAS_NAMESPACE", "facenas")
    argv = ["--port", "0", "--metrics-port", "0", "--trainer", "127.0.0.1:9", "--store", "127.0.0.1:9"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "searcher: invalid configuration:" in err
    assert "needs the Kubernetes API" in err and "Traceback" not in err
