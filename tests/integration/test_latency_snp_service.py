"""latency_snp as a real process with its SNPE backend, over gRPC, against the fake adb and SNPE tools:
backend choice, target description, a measurement, per-board metrics, UNAVAILABLE when the last board
is unplugged, and start-up errors a user can act on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from facenas.errors import Unavailable
from facenas.launcher import LocalCluster
from facenas.rpc.job_client import run_job
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.v1 import common_pb2, common_pb2_grpc
from tests.fakes.fixture import FakeSnpe, fake_snpe_fixture  # noqa: F401 - registers "fake_snpe"
from tests.integration.conftest import metric

pytestmark = pytest.mark.integration

OBJECTIVE = "SNP Quantized Latency (s)"
SPACE = common_pb2.SearchSpace(num_classes=18, in_channels=3, img_width=64, img_height=64)


def request(seed: int) -> common_pb2.EvaluateRequest:
    arch = HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=seed).sample_valid(
        ParamRange(1e5, 5e5)
    )
    return common_pb2.EvaluateRequest(
        architecture=common_pb2.Architecture(archid=arch.archid, json=arch.to_json()),
        objective=OBJECTIVE,
        space=SPACE,
    )


def test_snpe_backend_over_grpc(fake_snpe: FakeSnpe, tmp_path: Path, dataset: Path) -> None:
    fake_snpe.add_device("HDK1", model="HDK 888", soc="SM8350")
    args = ["--dataset-dir", str(dataset), "--backend", "snpe", "--snpe-root", str(fake_snpe.sdk_root)]
    with LocalCluster(tmp_path / "cluster", env=fake_snpe.env()) as cluster:
        snp = cluster.start("latency_snp", [*args, "--adb-timeout", "20"])
        stub = common_pb2_grpc.EvaluatorStub(grpc.insecure_channel(snp.address))
        described = stub.Describe(common_pb2.DescribeRequest(objective=OBJECTIVE, space=SPACE), timeout=30)
        assert described.target.key == "snpe/sm8350/dsp/snpe-2.22.6.240515/64x64"
        assert not described.target.emulated and "HDK 888" in described.target.description

        response = run_job(stub, request(1), timeout_s=120)
        details = json.loads(response.details_json)
        assert response.unit == "s" and response.value > 0
        assert details["device"]["serial"] == "HDK1" and details["backend"] == "snpe"
        assert metric(snp, 'facenas_snp_board_up{model="HDK 888",serial="HDK1",soc="SM8350"}') == 1
        assert metric(snp, 'facenas_snp_board_jobs_total{outcome="ok",serial="HDK1"}') == 1

        fake_snpe.update_device("HDK1", unplug_after_runs=fake_snpe.runs("HDK1"))
        with pytest.raises(Unavailable) as err:  # the job fails as UNAVAILABLE: run it elsewhere
            run_job(stub, request(2), timeout_s=120)
        assert "no healthy Snapdragon board" in str(err.value)
        assert "HDK1" in str(err.value)
        assert metric(snp, 'facenas_snp_board_up{model="HDK 888",serial="HDK1",soc="SM8350"}') == 0


def test_auto_backend_falls_back_to_the_labelled_emulation(tmp_path: Path, dataset: Path) -> None:
    with LocalCluster(tmp_path / "cluster", env={"SNPE_ROOT": ""}) as cluster:
        snp = cluster.start("latency_snp", ["--dataset-dir", str(dataset), "--rounds", "2"])
        stub = common_pb2_grpc.EvaluatorStub(grpc.insecure_channel(snp.address))
        described = stub.Describe(common_pb2.DescribeRequest(objective=OBJECTIVE, space=SPACE), timeout=30)
        assert described.target.emulated and described.target.key.startswith("snp-emulation/")


def test_snpe_backend_without_sdk_says_what_to_do(tmp_path: Path, dataset: Path) -> None:
    argv = [sys.executable, "-m", "services.latency_snp", "--dataset-dir", str(dataset), "--backend", "snpe"]
    done = subprocess.run(
        [*argv, "--snpe-root", str(tmp_path / "nowhere"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "SNPE tool 'snpe-onnx-to-dlc' is neither on PATH" in done.stderr and "--snpe-root" in done.stderr
