"""Tests of facenas.latency: CPU latency protocol, result and host description (no absolute timings)."""

from __future__ import annotations

import gc
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facenas.errors import InvalidInput, MeasurementError
from facenas.latency import (
    HostInfo,
    LatencyProtocol,
    LatencyResult,
    contention,
    host_info,
    measure_onnx_latency,
)
from facenas.latency import cpu as cpu_mod
from facenas.latency import host as host_mod

FAST = LatencyProtocol(
    warmup_runs=2,
    warmup_min_seconds=0.0,
    rounds=3,
    runs_per_round=5,
    min_round_seconds=0.0,
    max_attempts=1,
)


def _conv_model(dims: Sequence[int | str] = (1, 3, 64, 64), elem: int = TensorProto.FLOAT) -> bytes:
    """Return a Conv(3->8, 3x3) + Relu model, opset 17, input ``input_0``."""
    weight = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input_0", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["out"]),
        ],
        "conv_relu",
        [helper.make_tensor_value_info("input_0", elem, list(dims))],
        [helper.make_tensor_value_info("out", elem, [dims[0], 8, dims[2], dims[3]])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _two_input_model() -> bytes:
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("a", "b", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "add", info[:2], info[2:])
    return bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def _int_input_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    return bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


@pytest.fixture(scope="module")
def model() -> bytes:
    return _conv_model()


@pytest.fixture(scope="module")
def result(model: bytes) -> LatencyResult:
    return measure_onnx_latency(model, protocol=FAST)


class _FakeClock:
    """A perf_counter_ns stand-in: every second call advances by the next duration (ns)."""

    def __init__(self, durations: Iterable[int]) -> None:
        self._durations = iter(durations)
        self._t = 0
        self._ending = False

    def __call__(self) -> int:
        if self._ending:
            self._t += next(self._durations)
        self._ending = not self._ending
        return self._t


# One attempt of FAKE's 3 rounds x 2 runs: round medians (1, 2, 1) us -> cv ~0.43; (1, 1, 1) us -> cv 0.
_NOISY = [1000, 1000, 2000, 2000, 1000, 1000]
_LESS_NOISY = [1000, 1000, 1100, 1100, 1000, 1000]
_FLAT = [1000] * 6
FAKE = LatencyProtocol(
    warmup_runs=1, warmup_min_seconds=0.0, rounds=3, runs_per_round=2, min_round_seconds=0.0, max_attempts=3
)


@pytest.fixture()
def full_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """With fake sample clocks, let the contention meter see the whole CPU (the host's load is not
    what these tests are about; tests/unit/test_latency_contention.py is)."""
    ticks = itertools.count(0, 1000)  # one clock for both: every round gets exactly its wall time
    monkeypatch.setattr(contention, "_wall_ns", lambda: next(ticks))
    monkeypatch.setattr(contention, "_thread_cpu_ns", lambda: next(ticks))


# ---------------------------------------------------------------------------------------------- result


def test_result_fields_and_types(result: LatencyResult) -> None:
    assert result.input_name == "input_0"
    assert result.input_shape == (1, 3, 64, 64)
    assert result.input_dtype == "tensor(float)"
    assert result.provider == "CPUExecutionProvider"
    assert result.intra_op_threads == 1 and result.inter_op_threads == 1
    assert result.pinned_cpus == ()
    assert result.load_1min is None or result.load_1min >= 0
    assert result.samples == 15 and result.runs_per_round == 5 and len(result.round_medians_s) == 3
    assert result.attempts == 1 and len(result.attempt_cvs) == 1
    assert result.protocol == FAST and result.host == host_info()
    assert result.onnxruntime_version == result.host.onnxruntime_version
    for name in ("median_s", "mean_s", "stdev_s", "cv", "p10_s", "p90_s", "min_s", "max_s"):
        value = getattr(result, name)
        assert isinstance(value, float) and math.isfinite(value), name
    assert isinstance(result.stable, bool)


def test_result_statistics_are_ordered(result: LatencyResult) -> None:
    assert 0 < result.min_s <= result.p10_s <= result.median_s <= result.p90_s <= result.max_s
    assert result.min_s <= result.mean_s <= result.max_s
    assert result.cv >= 0 and result.stdev_s >= 0
    assert result.cv == result.attempt_cvs[0]
    assert result.stable == (not result.contended and result.cv <= FAST.max_cv)


def test_structure_is_deterministic(model: bytes) -> None:
    a = measure_onnx_latency(model, protocol=FAST, seed=3)
    b = measure_onnx_latency(model, protocol=FAST, seed=3)
    keys = ("input_name", "input_shape", "samples", "runs_per_round", "attempts", "seed", "protocol", "host")
    assert {k: getattr(a, k) for k in keys} == {k: getattr(b, k) for k in keys}


def test_to_dict_is_json_serialisable(result: LatencyResult) -> None:
    data = json.loads(json.dumps(result.to_dict()))
    assert data["input_shape"] == [1, 3, 64, 64]
    assert data["protocol"]["intra_op_threads"] == 1
    assert data["host"]["fingerprint"] == result.host.fingerprint()
    assert data["median_s"] == result.median_s


def test_model_from_path(tmp_path: Path, model: bytes) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(model)
    assert measure_onnx_latency(path, protocol=FAST).input_name == "input_0"
    assert measure_onnx_latency(str(path), protocol=FAST).samples == 15


def test_gc_state_restored(model: bytes) -> None:
    assert gc.isenabled()
    measure_onnx_latency(model, protocol=FAST)
    assert gc.isenabled()


def test_fast_models_get_longer_rounds(model: bytes) -> None:
    protocol = LatencyProtocol(
        warmup_runs=2,
        warmup_min_seconds=0.0,
        rounds=2,
        runs_per_round=1,
        min_round_seconds=0.02,
        max_attempts=1,
    )
    assert measure_onnx_latency(model, protocol=protocol).runs_per_round > 1


# ---------------------------------------------------------------------------------------------- inputs


def test_dynamic_dims_need_input_shape() -> None:
    dynamic = _conv_model(("batch", 3, "h", "w"))
    with pytest.raises(InvalidInput, match="dynamic"):
        measure_onnx_latency(dynamic, protocol=FAST)
    assert measure_onnx_latency(dynamic, (1, 3, 32, 32), protocol=FAST).input_shape == (1, 3, 32, 32)


@pytest.mark.parametrize("shape", [(1, 3, 32), (2, 3, 64, 64), (1, 3, 0, 64)])
def test_bad_input_shape(model: bytes, shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="input_shape"):
        measure_onnx_latency(model, shape, protocol=FAST)


@pytest.mark.parametrize("bad", [_two_input_model(), _int_input_model()])
def test_unsupported_inputs(bad: bytes) -> None:
    with pytest.raises(InvalidInput):
        measure_onnx_latency(bad, protocol=FAST)


@pytest.mark.parametrize("garbage", [b"", b"not an onnx model", b"\x08\x07" + bytes(range(256))])
def test_garbage_bytes(garbage: bytes) -> None:
    with pytest.raises(MeasurementError, match="cannot load ONNX model"):
        measure_onnx_latency(garbage, protocol=FAST)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        measure_onnx_latency(tmp_path / "absent.onnx", protocol=FAST)


# ---------------------------------------------------------------------------------------------- protocol


def test_protocol_defaults() -> None:
    p = LatencyProtocol()
    assert (p.intra_op_threads, p.inter_op_threads, p.execution_mode) == (1, 1, "sequential")
    assert not p.allow_spinning and p.cv_target == 0.03 and p.max_attempts >= 2 and p.rounds >= 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("warmup_runs", -1),
        ("warmup_min_seconds", -0.1),
        ("warmup_max_seconds", math.nan),
        ("warmup_min_seconds", 5.0),  # above warmup_max_seconds
        ("rounds", 1),
        ("runs_per_round", 0),
        ("runs_per_round", 2.5),
        ("min_round_seconds", math.inf),
        ("intra_op_threads", 0),
        ("intra_op_threads", True),
        ("inter_op_threads", 0),
        ("execution_mode", "fast"),
        ("graph_optimization_level", "max"),
        ("allow_spinning", 1),
        ("pin_threads", "yes"),
        ("cv_target", -0.01),
        ("max_cv", 0.01),  # below cv_target
        ("max_cv", math.inf),
        ("min_cpu_fraction", 1.5),
        ("min_cpu_fraction", -0.1),
        ("max_attempts", 0),
        ("max_seconds", 0),
    ],
)
def test_bad_protocol_value_names_field(field: str, value: object) -> None:
    with pytest.raises(InvalidInput, match=f"LatencyProtocol.{field}"):
        LatencyProtocol(**{field: value})  # type: ignore[arg-type]


def test_intra_op_threads_above_usable_cpus(model: bytes) -> None:
    too_many = LatencyProtocol(intra_op_threads=host_info().usable_cpus + 1)
    with pytest.raises(InvalidInput, match="intra_op_threads"):
        measure_onnx_latency(model, protocol=too_many)


# ---------------------------------------------------------------------------------------------- attempts


def test_remeasures_until_stable(model: bytes, monkeypatch: pytest.MonkeyPatch, full_cpu: None) -> None:
    monkeypatch.setattr(cpu_mod, "_now_ns", _FakeClock(_NOISY + _FLAT + _NOISY))
    r = measure_onnx_latency(model, protocol=FAKE)
    assert r.attempts == 2 and r.attempt_cvs[0] > FAKE.cv_target
    assert r.cv == 0.0 and r.stable
    assert r.median_s == pytest.approx(1e-6) and r.samples == 6


def test_keeps_lowest_cv_attempt(model: bytes, monkeypatch: pytest.MonkeyPatch, full_cpu: None) -> None:
    monkeypatch.setattr(cpu_mod, "_now_ns", _FakeClock(_NOISY + _LESS_NOISY + _NOISY))
    protocol = LatencyProtocol(**{**FAKE.to_dict(), "cv_target": 0.001, "max_cv": 0.001})  # type: ignore[arg-type]
    r = measure_onnx_latency(model, protocol=protocol)
    assert r.attempts == protocol.max_attempts == 3
    assert r.cv == min(r.attempt_cvs) == r.attempt_cvs[1] > 0
    assert not r.stable
    assert r.max_s == pytest.approx(1.1e-6)


def test_budget_stops_attempts_and_rounds(
    model: bytes, monkeypatch: pytest.MonkeyPatch, full_cpu: None
) -> None:
    monkeypatch.setattr(cpu_mod, "_now_ns", _FakeClock(_NOISY * 10))
    protocol = LatencyProtocol(**{**FAKE.to_dict(), "rounds": 5, "max_seconds": 1e-6})  # type: ignore[arg-type]
    r = measure_onnx_latency(model, protocol=protocol)
    assert r.attempts == 1 and len(r.round_medians_s) == 2 and not r.stable


def test_zero_target_exhausts_attempts(model: bytes) -> None:
    protocol = LatencyProtocol(**{**FAST.to_dict(), "cv_target": 0.0, "max_attempts": 2})  # type: ignore[arg-type]
    r = measure_onnx_latency(model, protocol=protocol)
    assert r.attempts == 2 and len(r.attempt_cvs) == 2 and r.cv == min(r.attempt_cvs)


# ---------------------------------------------------------------------------------------------- host


def test_host_info_fields() -> None:
    info = host_info()
    assert isinstance(info, HostInfo) and info is host_info()
    assert info.cpu_model and info.machine and info.os and info.python and info.onnxruntime_version
    assert info.logical_cpus >= info.usable_cpus >= 1
    assert list(info.isa) == sorted(info.isa)
    if info.machine == "x86_64":
        assert "sse4_2" in info.isa


def test_fingerprint_stable_and_discriminating() -> None:
    info = host_info()
    fp = info.fingerprint()
    assert fp == host_mod._collect().fingerprint() and len(fp) == 12
    int(fp, 16)
    other = HostInfo(**{**info.__dict__, "isa": (*info.isa, "amx_fp8")})
    assert other.fingerprint() != fp
    same = HostInfo(**{**info.__dict__, "usable_cpus": 1, "python": "0.0"})
    assert same.fingerprint() == fp
    assert json.loads(json.dumps(info.to_dict()))["fingerprint"] == fp


def test_cpuinfo_parsing_arm() -> None:
    fields = host_mod._cpuinfo_fields("processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp i8mm\n")
    assert host_mod._isa(fields) == ("asimd", "asimddp", "i8mm")
    assert host_mod._cpu_model(fields)  # falls back to platform data, never empty
