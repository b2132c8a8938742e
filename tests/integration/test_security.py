"""Security options on real service processes: mTLS between every process and for clients, the
searcher's API token, reflection off, and a whole local search with all of it on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from facenas.launcher import LocalCluster, ServiceProcess
from facenas.rpc import security
from facenas.v1 import searcher_pb2_grpc, store_pb2, store_pb2_grpc
from tests.fakes.certs import TestCA
from tests.integration.conftest import tiny_search

pytestmark = pytest.mark.integration

TOKEN = "0123456789abcdef0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]
#: latency_cpu accepts its first measurement: the whole-system test is about channels, not a busy host
QUICK_LATENCY = {"FACENAS_ROUNDS": "2", "FACENAS_CV_TARGET": "5", "FACENAS_MAX_CV": "5"}
QUICK_LATENCY["FACENAS_MIN_CPU_FRACTION"] = "0"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_env(ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What turns mTLS on for a whole deployment: one directory like the Kubernetes Secret's."""
    return {security.ENV_DIR: str(ca.tls_dir(tmp_path_factory.mktemp("tls")))}


def _clean_env(**extra: str) -> dict[str, str]:
    names = (security.ENV_CERT, security.ENV_KEY, security.ENV_CA, security.ENV_DIR, security.ENV_SERVER_NAME)
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("FACENAS_API_TOKEN")}
    return {**env, **extra}


def _list_stored(channel: grpc.Channel, timeout: float = 10) -> int:
    stub = store_pb2_grpc.StoreStub(channel)
    return len(stub.ListSearches(store_pb2.ListSearchesRequest(), timeout=timeout).searches)


def _healthcheck(
    process: ServiceProcess, env: dict[str, str], service: str
) -> subprocess.CompletedProcess[str]:
    """The Kubernetes exec probe of the security component, run against a local process."""
    command = [sys.executable, "-m", "facenas.rpc.healthcheck", "--port", str(process.port)]
    return subprocess.run(
        [*command, "--service", service], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def _security_log(process: ServiceProcess) -> dict[str, object]:
    for line in process.log_path.read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("msg") == "security":
            return dict(json.loads(line))
    raise AssertionError(f"no security log line in {process.log_path}")


def test_a_tls_service_serves_clients_of_the_ca_only(
    tmp_path: Path, ca: TestCA, tls_env: dict[str, str]
) -> None:
    with LocalCluster(tmp_path / "cluster", env=_clean_env(**tls_env)) as cluster:
        assert cluster.tls is not None  # the launcher's own health checks went over mTLS
        store = cluster.start("store", ["--url", f"sqlite:///{tmp_path / 'store.db'}"])
        assert _security_log(store)["tls"] is True
        with cluster.channel(store.address) as channel:
            assert _list_stored(channel) == 0
            # reflection stays on by default, behind mTLS
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            listed = list(
                stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            )
            assert "facenas.v1.Store" in {s.name for s in listed[0].list_services_response.service}

        stranger = TestCA(tmp_path / "other-ca", name="another CA").issue(tmp_path / "other", "intruder")
        refused = {
            "plaintext": grpc.insecure_channel(store.address),
            "no client certificate": grpc.secure_channel(
                store.address, grpc.ssl_channel_credentials(root_certificates=ca.ca_path.read_bytes())
            ),
            "a certificate of another CA": grpc.secure_channel(
                store.address,
                grpc.ssl_channel_credentials(
                    ca.ca_path.read_bytes(), stranger.key.read_bytes(), stranger.cert.read_bytes()
                ),
            ),
        }
        for case, channel in refused.items():
            with channel, pytest.raises(grpc.RpcError) as failed:
                _list_stored(channel, timeout=5)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, case

        # the exec probe: SERVING with the deployment's certificate, refused without it
        probe = _healthcheck(store, _clean_env(**tls_env), "facenas.v1.Store")
        assert probe.returncode == 0 and probe.stdout.strip() == "SERVING", probe.stderr
        plain = _healthcheck(store, _clean_env(), "facenas.v1.Store")
        assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr


def test_half_configured_tls_stops_a_service_at_start(tmp_path: Path, tls_env: dict[str, str]) -> None:
    cert = str(Path(tls_env[security.ENV_DIR]) / "tls.crt")
    env = _clean_env(FACENAS_TLS_CERT=cert, FACENAS_TLS_CA=str(tmp_path / "absent.crt"))
    done = subprocess.run(
        [sys.executable, "-m", "services.store", "--port", "0", "--url", f"sqlite:///{tmp_path / 's.db'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "--tls-key: missing" in done.stderr and "--tls-ca: cannot read" in done.stderr


def test_the_searcher_requires_its_token_over_mtls(tmp_path: Path, tls_env: dict[str, str]) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with LocalCluster(tmp_path / "cluster", env=_clean_env(**tls_env)) as cluster:
        store = cluster.start("store", ["--url", f"sqlite:///{tmp_path / 'store.db'}"])
        args = ["--store", store.address, "--api-token-file", str(token_file), "--no-reflection"]
        searcher = cluster.start("searcher", args)  # the launcher's health checks pass without the token
        assert _security_log(searcher) == {**_security_log(searcher), "tls": True, "api_token": True}

        def list_searches(token: str | None) -> int:
            with cluster.channel(searcher.address, token) as channel:
                stub = searcher_pb2_grpc.SearcherStub(channel)
                return len(stub.ListSearches(store_pb2.ListSearchesRequest(), timeout=30).searches)

        for token in (None, TOKEN[::-1]):
            with pytest.raises(grpc.RpcError) as refused:
                list_searches(token)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "API token" in str(refused.value.details())
        assert list_searches(TOKEN) == 0  # and the searcher reached the store over mTLS

        with cluster.channel(searcher.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="facenas.v1.Searcher")
            assert health.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as absent:
                list(
                    reflection.ServerReflectionInfo(
                        iter([reflection_pb2.ServerReflectionRequest()]), timeout=10
                    )
                )
            assert absent.value.code() == grpc.StatusCode.UNIMPLEMENTED

        # the CLI: the token from the environment, mTLS from FACENAS_TLS_DIR
        cli = [sys.executable, "-m", "facenas", "search", "list", "--searcher", searcher.address, "--json"]
        ok = subprocess.run(
            cli,
            env=_clean_env(**tls_env, FACENAS_API_TOKEN=TOKEN),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ok.returncode == 0, ok.stderr
        refused_cli = subprocess.run(
            cli, env=_clean_env(**tls_env), capture_output=True, text=True, timeout=120
        )
        assert refused_cli.returncode == 2
        assert "requires an API token" in refused_cli.stderr and "FACENAS_API_TOKEN" in refused_cli.stderr


@pytest.mark.slow
def test_a_local_search_runs_with_mtls_and_the_token_on(
    tmp_path: Path, dataset: Path, tls_env: dict[str, str]
) -> None:
    """`facenas search run` with mTLS and the token on for every process: the launcher's health checks,
    searcher -> store, trainer and latency_cpu, and the CLI -> searcher all go through the same config."""
    config = tmp_path / "search.yaml"
    config.write_text(tiny_search(iters=1, steps=2), encoding="utf-8")
    args = [str(config), "--dataset-dir", str(dataset), "--output-dir", "out", "--trainers", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "facenas", "search", "run", *args, "--val-fraction", "0.2", "--json"],
        env=_clean_env(**tls_env, FACENAS_API_TOKEN=TOKEN, **QUICK_LATENCY),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "completed" and result["evaluations_run"] > 0
    logs = sorted((tmp_path / "out" / "logs").glob("*.log"))
    assert {p.stem for p in logs} >= {"store", "trainer-1", "latency_cpu", "searcher"}
    for log in logs:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        (posture,) = [line for line in lines if line.get("msg") == "security"]
        assert posture["tls"] is True, log
        assert posture["api_token"] is (log.stem == "searcher"), log
