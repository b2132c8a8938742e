"""deploy/prometheus and deploy/grafana against a live system and a real Prometheus.

Starts store, 2 trainers, latency_cpu and searcher (real processes), latency_snp on its SNPE backend with
one board of the fake adb/SNPE tools (tests/fakes), a local ``prometheus`` scraping every service's
/metrics each second with ``deploy/prometheus/alerts.yaml`` loaded, runs one tiny async search and one
latency_snp measurement, then evaluates through ``/api/v1/query``:

- every PromQL target of ``deploy/grafana/facenas-dashboard.json`` (``$__rate_interval`` -> ``30s``): each
  must succeed and return data;
- every alert rule: the whole expression must succeed and return nothing (a healthy system fires no
  alert), and its left side (the expression with its final ``<op> <threshold>`` stripped; the rule file
  keeps every rule in that form) must return data.

``facenas_search_last_progress_timestamp_seconds`` exists only while a search runs, so the expressions
that use it (SearchStuck's left side, one panel) are checked during the search, the rest after it.

The errors panel needs a non-OK code, so the test makes one harmless NOT_FOUND call first.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from facenas.data.synth import generate_dataset
from facenas.launcher import LocalCluster, ServiceProcess
from facenas.rpc.job_client import run_job
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.v1 import common_pb2, common_pb2_grpc, searcher_pb2, store_pb2
from tests.fakes.fixture import FakeSnpe
from tests.integration.conftest import System, tiny_search
from tests.timing import scaled
from tests.tools import require_binary

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "facenas-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def prometheus_installed() -> str:
    """Prometheus is part of the suite's environment (.ci/run installs Debian's package)."""
    require_binary("promtool", "apt-get install prometheus")
    return require_binary("prometheus", "apt-get install prometheus")


#: "<left side> <comparison> <threshold>" (the form every rule in alerts.yaml keeps).
RUNNING_ONLY = "facenas_search_last_progress_timestamp_seconds"  # removed when a search ends
COMPARISON = re.compile(r"(?s)^(.*?)\s+(==|!=|>=|<=|>|<)\s+(\S+)\s*$")


def dashboard_exprs() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield target["expr"]
            yield from walk(panel.get("panels", []))

    exprs = []
    for expr in walk(json.loads(DASHBOARD.read_text())["panels"]):
        for var in ("${__rate_interval}", "$__rate_interval", "${__interval}", "$__interval"):
            expr = expr.replace(var, "30s")
        expr = re.sub(r"\$\{?\w+\}?", "", expr)  # any other dashboard variable
        exprs.append(expr)
    return exprs


def alert_rules() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


def rules_firing_within(tmp_path: Path, seconds: str) -> Path:
    """alerts.yaml with every rule's ``for:`` shortened to ``seconds`` (the same rules, in test time)."""
    groups = yaml.safe_load(RULES.read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = seconds
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(groups))
    return path


def left_side(expr: str) -> str:
    match = COMPARISON.match(expr.strip())
    assert match, f"not '<value> <op> <threshold>': {expr}"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list[Any]:
        try:
            body = self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{expr}: {err.read().decode()}") from err
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def empty(self, exprs: list[str]) -> list[str]:
        return [expr for expr in exprs if not self.query(expr)]


def test_rules_pass_promtool() -> None:
    assert PROMTOOL, "promtool is not installed next to prometheus"
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(alert_rules()) >= {
        "SearchStuck",
        "ReplicaDown",
        "WorkerDown",
        "HighErrorRate",
        "SnapdragonBoardDown",
    }


def test_dashboard_and_alerts_against_a_live_system(tmp_path: Path) -> None:
    assert PROMETHEUS
    dataset = tmp_path / "faces"
    generate_dataset(dataset, 40, size=64, seed=3)
    fake = FakeSnpe(tmp_path)
    fake.add_device("HDK1", model="HDK 888", soc="SM8350")
    with LocalCluster(tmp_path / "cluster", env=fake.env()) as cluster:
        system = System(cluster, dataset)
        snpe_args = ["--dataset-dir", str(dataset), "--backend", "snpe", "--snpe-root", str(fake.sdk_root)]
        snp = cluster.start("latency_snp", snpe_args)
        targets: dict[str, list[str]] = {}
        for process in cluster.processes.values():
            assert process.metrics_port, f"{process.name} has no metrics port"
            targets.setdefault(process.service, []).append(f"127.0.0.1:{process.metrics_port}")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_firing_within(tmp_path, "2s"))],
            "scrape_configs": [
                {"job_name": f"facenas-{service}", "static_configs": [{"targets": addresses}]}
                for service, addresses in sorted(targets.items())
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            prom = Prometheus(f"http://127.0.0.1:{port}")
            _exercise(prom, system, snp, proc, tmp_path / "prometheus.log")
            _a_killed_worker_fires_worker_down(prom, system)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _measure_on_board(snp: ServiceProcess) -> None:
    """One SNPE measurement on the fake board, for the board panels."""
    arch = HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=1).sample_valid(ParamRange(1e5, 5e5))
    request = common_pb2.EvaluateRequest(
        architecture=common_pb2.Architecture(archid=arch.archid, json=arch.to_json()),
        objective="SNP Quantized Latency (s)",
        space=common_pb2.SearchSpace(num_classes=18, in_channels=3, img_width=64, img_height=64),
    )
    stub = common_pb2_grpc.EvaluatorStub(grpc.insecure_channel(snp.address))
    assert run_job(stub, request, timeout_s=120).value > 0


def _exercise(
    prom: Prometheus, system: System, snp: ServiceProcess, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + scaled(30)
    while True:
        assert proc.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=5):
                break
        except OSError:
            assert time.monotonic() < deadline, "prometheus not ready within 30 s"
            time.sleep(0.2)

    stub = system.stub()
    with pytest.raises(grpc.RpcError) as not_found:  # a non-OK code for the errors panel
        stub.GetSearch(searcher_pb2.SearchRef(search_id="nope"), timeout=10)
    assert not_found.value.code() == grpc.StatusCode.NOT_FOUND

    rules = alert_rules()
    left_sides = {name: left_side(expr) for name, expr in rules.items()}
    search_id = stub.StartSearch(
        searcher_pb2.StartSearchRequest(config=tiny_search(iters=2), name="prometheus"), timeout=60
    ).search.search_id

    # Series that exist only while a search runs (SearchStuck's left side, the "seconds since last
    # progress" panel) are checked during the search; everything else once it has finished.
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    while_running = [*left_sides.values(), *(e for e in exprs if RUNNING_ONLY in e)]
    after = [e for e in exprs if RUNNING_ONLY not in e]
    while missing := prom.empty(while_running):
        state = stub.GetSearch(searcher_pb2.SearchRef(search_id=search_id), timeout=30).search.status
        if state != store_pb2.SEARCH_STATUS_RUNNING:
            pytest.fail(f"search ended before these expressions had data: {missing}")
        time.sleep(0.5)

    _measure_on_board(snp)
    request = searcher_pb2.WatchSearchRequest(search_id=search_id)
    kinds = [event.kind for event in stub.WatchSearch(request, timeout=scaled(300))]
    assert kinds[-1] == "completed", kinds

    time.sleep(3)  # a few scrapes of the finished search
    deadline = time.monotonic() + scaled(20)
    while missing := prom.empty(after):
        assert time.monotonic() < deadline, f"dashboard expressions without data: {missing}"
        time.sleep(1)

    # A healthy system fires nothing; the rules are loaded and evaluate cleanly.
    for name, expr in rules.items():
        assert prom.query(expr) == [], f"{name} would fire on a healthy system"
    loaded = prom.get("/api/v1/rules")["data"]["groups"]
    health = {rule["name"]: rule["health"] for group in loaded for rule in group["rules"]}
    assert health == dict.fromkeys(rules, "ok"), health


def _a_killed_worker_fires_worker_down(prom: Prometheus, system: System) -> None:
    """kill -9 of a trainer: Prometheus fails to scrape it and WorkerDown fires for that instance."""
    victim = system.trainers[0]
    instance = f"127.0.0.1:{victim.metrics_port}"
    victim.kill()
    deadline = time.monotonic() + scaled(60)
    while True:
        alerts = prom.get("/api/v1/alerts")["data"]["alerts"]
        firing = {
            (a["labels"]["alertname"], a["labels"].get("instance")) for a in alerts if a["state"] == "firing"
        }
        if ("WorkerDown", instance) in firing:
            break
        assert time.monotonic() < deadline, f"WorkerDown did not fire for {instance}: {alerts}"
        time.sleep(0.5)
    others = {i for name, i in firing if name == "WorkerDown"} - {instance}
    assert not others, f"WorkerDown fired for live workers too: {others}"
