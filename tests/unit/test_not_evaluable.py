"""An architecture that cannot be evaluated is ArchNotEvaluable at its cause, FAILED_PRECONDITION on the
wire and FailureKind.NOT_EVALUABLE in a job; what is the host's fault (no memory, a bad option, a broken
tool) is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from prometheus_client import REGISTRY
from torch import nn

from facenas.domain import Budget, EvalKey, EvalSpace, FailureKind, JobState
from facenas.errors import (
    ArchNotEvaluable,
    ExportError,
    FacenasError,
    InvalidInput,
    MeasurementError,
    ModelNotExportable,
    Unavailable,
)
from facenas.jobs import JobManager, JobSpec, JobView
from facenas.latency import cpu as latency_cpu
from facenas.latency.cpu import LatencyProtocol, measure_onnx_latency, ort_rejects_model
from facenas.latency.quantized import onnx_miou, quantize_int8
from facenas.model import export_onnx
from facenas.pipeline import check_model_shapes
from facenas.rpc.evalconv import job_failure, job_to_proto
from facenas.rpc.evaluator import EvaluatorServicer
from facenas.rpc.job_client import run_job
from facenas.rpc.server import RunningServer, ServerConfig, start
from facenas.rpc.status import code_for, error_from_rpc
from facenas.snp.process import ToolError, ToolResult, ToolTimeout
from facenas.snp.sdk import ConversionError
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.space.hgnet import Arch
from facenas.v1 import common_pb2, common_pb2_grpc
from facenas.workers.base import Measurement, Work
from tests.unit.eval_fakes import CPU_LATENCY, FakeLatency

SPACE = EvalSpace(img_size=(64, 64))
# what these tests check does not depend on a quiet host: any CPU share and spread are accepted, so
# that they pass on a loaded machine (tests/unit/test_latency_contention.py tests the refusals)
FAST = LatencyProtocol(
    warmup_runs=1,
    warmup_min_seconds=0.0,
    rounds=2,
    runs_per_round=2,
    min_round_seconds=0.0,
    max_attempts=1,
    min_cpu_fraction=0.0,
    max_cv=10.0,
)


@pytest.fixture(scope="module")
def arch() -> Arch:
    return HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=5).sample_valid(ParamRange(1e5, 5e5))


class Raising(FakeLatency):
    """A CPU latency backend whose every evaluation raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        raise self.error


def _one_job(error: Exception, arch: Arch) -> JobView:
    manager = JobManager(Raising(error), "latency_cpu-not-evaluable")
    try:
        target = manager.backend.target(CPU_LATENCY, SPACE)
        key = EvalKey(arch.archid, CPU_LATENCY, "b", target.key)
        submitted = manager.submit(JobSpec(key, arch, SPACE, Budget(), target), "s")[0]
        for view in manager.follow(submitted.job_id, heartbeat_s=0.05, min_interval_s=0):
            if view.state.finished:
                return view
        raise AssertionError("follow ended early")
    finally:
        manager.close()


def _unknown_op_model() -> bytes:
    """A well-formed ONNX graph with an op onnxruntime does not have (INVALID_GRAPH when loaded)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


# ------------------------------------------------------------------------------------ error <-> status


def test_the_error_is_failed_precondition_both_ways() -> None:
    theirs: list[FacenasError] = [
        ArchNotEvaluable("x"),
        ModelNotExportable("x"),
        ConversionError("snpe-onnx-to-dlc failed (exit 1): Op type not supported"),
    ]
    for error in theirs:
        assert code_for(error) == grpc.StatusCode.FAILED_PRECONDITION, error
    result = ToolResult(("snpe-onnx-to-dlc",), -9, "", "", 1.0)
    hosts: list[FacenasError] = [
        MeasurementError("x"),
        ToolError("killed", result),
        ToolTimeout(["snpe-onnx-to-dlc"], 1.0),
        ExportError("exporter produced opset 18, expected 17"),
    ]
    for error in hosts:
        assert code_for(error) != grpc.StatusCode.FAILED_PRECONDITION, error

    class Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.FAILED_PRECONDITION

        def details(self) -> str:
            return "snpe-onnx-to-dlc rejected the model"

    back = error_from_rpc(Failed())
    assert isinstance(back, ArchNotEvaluable) and "rejected the model" in str(back)


def _raise_not_evaluable(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise ModelNotExportable("torch.onnx.export failed: UnsupportedOperatorError")


def test_a_servicer_raising_it_answers_failed_precondition() -> None:
    service = "facenas.test.NotEvaluable"

    def add(_servicer: object, server: grpc.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(_raise_not_evaluable)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Do": handler}),))

    running = start([(add, None, service)], ServerConfig(metrics_port=None))
    try:
        with grpc.insecure_channel(running.address) as channel, pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary(f"/{service}/Do", None, None)(b"", timeout=30)
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert isinstance(error_from_rpc(failed.value), ArchNotEvaluable)
    finally:
        running.stop(0)


# ------------------------------------------------------------------------------------ jobs


@pytest.mark.slow
def test_a_job_of_an_arch_that_cannot_be_evaluated_fails_not_evaluable(arch: Arch) -> None:
    before = REGISTRY.get_sample_value(
        "facenas_evaluations_total",
        {"service": "latency_cpu-not-evaluable", "objective": CPU_LATENCY, "outcome": "not_evaluable"},
    )
    done = _one_job(ConversionError("snpe-onnx-to-dlc failed (exit 1): Op type not supported: Foo"), arch)
    assert (done.state, done.failure) == (JobState.FAILED, FailureKind.NOT_EVALUABLE)
    assert "Op type not supported: Foo" in done.error
    after = REGISTRY.get_sample_value(
        "facenas_evaluations_total",
        {"service": "latency_cpu-not-evaluable", "objective": CPU_LATENCY, "outcome": "not_evaluable"},
    )
    assert (after or 0) == (before or 0) + 1

    message = job_to_proto(done)
    assert message.failure == common_pb2.FAILURE_KIND_NOT_EVALUABLE
    assert job_failure(message) == FailureKind.NOT_EVALUABLE


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (MeasurementError("snpe-dlc-info output lacks Total parameters"), FailureKind.ERROR),
        (ToolTimeout(["snpe-onnx-to-dlc"], 600.0), FailureKind.ERROR),
        (ExportError("exporter produced opset 18, expected 17"), FailureKind.ERROR),
        (Unavailable("no healthy Snapdragon board"), FailureKind.UNAVAILABLE),
        (InvalidInput("bad request"), FailureKind.INVALID),
    ],
)
def test_the_hosts_failures_are_not_the_archs(arch: Arch, error: Exception, kind: FailureKind) -> None:
    done = _one_job(error, arch)
    assert (done.state, done.failure) == (JobState.FAILED, kind)


@pytest.fixture
def evaluator(arch: Arch) -> Iterator[RunningServer]:
    manager = JobManager(Raising(ModelNotExportable("torch.onnx.export failed: no")), "latency_cpu-rpc")
    running = start(
        [(common_pb2_grpc.add_EvaluatorServicer_to_server, EvaluatorServicer(manager), "e")],
        ServerConfig(metrics_port=None),
    )
    yield running
    running.stop(0)
    manager.close()


def test_run_job_raises_it_over_grpc(evaluator: RunningServer, arch: Arch) -> None:
    request = common_pb2.EvaluateRequest(
        architecture=common_pb2.Architecture(archid=arch.archid, json=arch.to_json()),
        objective=CPU_LATENCY,
        space=common_pb2.SearchSpace(num_classes=18, in_channels=3, img_width=64, img_height=64),
    )
    with grpc.insecure_channel(evaluator.address) as channel:
        stub = common_pb2_grpc.EvaluatorStub(channel)
        with pytest.raises(ArchNotEvaluable, match=r"torch\.onnx\.export failed"):
            run_job(stub, request, timeout_s=60, heartbeat_s=0.1)
        (job,) = stub.ListJobs(common_pb2.ListJobsRequest(), timeout=30).jobs
        assert job.failure == common_pb2.FAILURE_KIND_NOT_EVALUABLE


# ------------------------------------------------------------------------------------ causes: export


class _Fft(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real: torch.Tensor = torch.fft.fft2(x).real  # no ONNX opset 17 equivalent
        return real


def test_a_model_the_exporter_rejects_is_not_evaluable() -> None:
    with pytest.raises(ModelNotExportable, match="fft") as info:
        export_onnx(_Fft(), (16, 16))
    assert isinstance(info.value, ArchNotEvaluable) and isinstance(info.value, ExportError)


@pytest.mark.parametrize("error", [MemoryError("no memory"), ImportError("no module named onnxscript")])
def test_an_exporter_that_cannot_run_is_not_the_models_fault(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError) as info:
        export_onnx(nn.Conv2d(3, 4, 3), (16, 16))
    assert not isinstance(info.value, ArchNotEvaluable)


def test_an_invalid_exported_graph_is_not_evaluable(monkeypatch: pytest.MonkeyPatch) -> None:
    def invalid(model: object) -> None:
        raise onnx.checker.ValidationError("Node (n0) has input size 0 not in range [min=1, max=1]")

    monkeypatch.setattr(onnx.checker, "check_model", invalid)
    with pytest.raises(ModelNotExportable, match="exported ONNX graph is invalid"):
        export_onnx(nn.Conv2d(3, 4, 3), (16, 16))


# ------------------------------------------------------------------------------------ causes: onnxruntime


def test_a_model_onnxruntime_rejects_is_not_evaluable() -> None:
    with pytest.raises(ArchNotEvaluable, match="cannot load ONNX model"):
        measure_onnx_latency(_unknown_op_model(), protocol=FAST)


def test_onnxruntime_failures_of_the_host_are_measurement_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ort_rejects_model(ort_state.InvalidGraph("This is an invalid model"))
    assert ort_rejects_model(ort_state.Fail("Fatal error: com.acme:Foo(-1) is not a registered function/op"))
    assert not ort_rejects_model(ort_state.Fail("std::bad_alloc"))
    assert not ort_rejects_model(ort_state.RuntimeException("Failed to allocate memory"))
    assert not ort_rejects_model(ort_state.InvalidProtobuf("protobuf parsing failed"))  # a truncated file
    assert not ort_rejects_model(RuntimeError("Processor id must consist of only digits: abc"))

    def broken_options(*args: object) -> object:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.add_session_config_entry("session.intra_op_thread_affinities", "abc")  # a host setting
        return options

    monkeypatch.setattr(latency_cpu, "_session_options", broken_options)
    with pytest.raises(MeasurementError, match="cannot load ONNX model") as info:
        measure_onnx_latency(_unknown_op_model(), protocol=FAST)
    assert not isinstance(info.value, ArchNotEvaluable)


def test_int8_quantization_and_evaluation_of_a_rejected_model_are_not_evaluable(
    synth_dataset: Path,
) -> None:
    from facenas.pipeline import DatasetSplits

    calibration = [np.zeros((1, 3, 8, 8), np.float32)]
    with pytest.raises(ArchNotEvaluable, match="int8 quantization failed"):
        quantize_int8(_unknown_op_model(), calibration)
    val = DatasetSplits.open(synth_dataset, (64, 64), cache=None).val
    with pytest.raises(ArchNotEvaluable, match="cannot load ONNX model"):
        onnx_miou(_unknown_op_model(), val, max_images=1, batch_size=1)


# ------------------------------------------------------------------------------------ causes: training


def test_a_model_whose_shapes_do_not_work_out_is_not_evaluable(arch: Arch) -> None:
    params = SearchSpaceParams(img_size=(64, 64))
    check_model_shapes(arch, params, (64, 64))
    with pytest.raises(ArchNotEvaluable, match=f"{arch.archid} cannot run on 60x64 inputs"):
        check_model_shapes(arch, params, (60, 64))  # a side the bottleneck stride does not divide


def test_shape_checks_leave_the_spec_errors_alone(arch: Arch, monkeypatch: pytest.MonkeyPatch) -> None:
    import facenas.pipeline as pipeline

    def too_big(*args: object) -> nn.Module:
        raise InvalidInput("architecture too large")

    monkeypatch.setattr(pipeline, "build_model", too_big)
    with pytest.raises(InvalidInput, match="too large") as info:
        check_model_shapes(arch, SearchSpaceParams(img_size=(64, 64)), (64, 64))
    assert not isinstance(info.value, ArchNotEvaluable) and isinstance(info.value, FacenasError)
