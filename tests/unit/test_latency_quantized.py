"""Tests of facenas.latency.quantized: int8 QDQ quantization, its emulated latency and its accuracy.

The model is a small sampled arch at 64x64 trained for a few steps, so that it predicts more than one
class: with random weights it predicts one class everywhere and argmax agreement would be trivially 100%.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from facenas.data.synth import generate_dataset
from facenas.errors import ArchNotEvaluable, DatasetError, InvalidInput, MeasurementError
from facenas.latency import LatencyProtocol
from facenas.latency import quantized as quant
from facenas.latency.quantized import (
    calibration_batches,
    measure_quantized_latency,
    quantize_int8,
    quantized_miou,
)
from facenas.model import build_model, export_onnx
from facenas.pipeline import DatasetSplits
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.train.loop import TrainingConfig, partial_train

SIZE = (64, 64)
# what these tests check does not depend on a quiet host: any CPU share and spread are accepted, so
# that they pass on a loaded machine (tests/unit/test_latency_contention.py tests the refusals)
FAST = LatencyProtocol(
    warmup_runs=2,
    warmup_min_seconds=0.0,
    rounds=3,
    runs_per_round=3,
    min_round_seconds=0.0,
    max_attempts=1,
    min_cpu_fraction=0.0,
    max_cv=10.0,
)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quant-data")
    generate_dataset(root, 24, size=64)
    return root


@pytest.fixture(scope="module")
def fp32_bytes(dataset_dir: Path) -> bytes:
    """A ~1M-parameter sampled arch, trained 10 steps (about 3 s), exported at 64x64.

    One torch thread: on a busy 2-core host, two OpenMP threads made these 10 steps take 35 s, not 3.
    """
    params = SearchSpaceParams(img_size=SIZE)
    arch = HgnetSearchSpace(params, seed=0).sample_valid(ParamRange(1e5, 1.5e6))
    torch.manual_seed(0)
    model = build_model(arch.spec, params.num_classes, params.in_channels)
    splits = DatasetSplits.open(dataset_dir, SIZE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainingConfig(steps=10, batch_size=8, device="cpu")
        partial_train(model, splits.train, splits.val, config, 18)
    finally:
        torch.set_num_threads(threads)
    return export_onnx(model, SIZE).model_bytes


@pytest.fixture(scope="module")
def calibration(dataset_dir: Path) -> list[np.ndarray]:
    return calibration_batches(dataset_dir, SIZE, count=8)


@pytest.fixture(scope="module")
def int8_bytes(fp32_bytes: bytes, calibration: list[np.ndarray]) -> bytes:
    return quantize_int8(fp32_bytes, calibration)


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


@pytest.mark.slow
def test_graph_has_qdq_nodes_and_8bit_weights(int8_bytes: bytes) -> None:
    graph = onnx.load_from_string(int8_bytes).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    types = {init.data_type for init in graph.initializer}
    assert TensorProto.INT8 in types  # weights
    assert TensorProto.UINT8 in types  # activation zero points


def test_int8_outputs_agree_with_fp32(
    fp32_bytes: bytes, int8_bytes: bytes, calibration: list[np.ndarray]
) -> None:
    for x in calibration[:3]:
        ref, got = _run(fp32_bytes, x), _run(int8_bytes, x)
        assert got.shape == ref.shape == (1, 18, 64, 64)
        assert len(np.unique(ref.argmax(1))) >= 2  # agreement below is not trivial
        # 8-bit rounding flips only pixels near a decision boundary: ~98% agree here; 80% leaves margin
        assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.8
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref - ref.mean()) < 0.1


def test_quantization_is_deterministic(
    fp32_bytes: bytes, int8_bytes: bytes, calibration: list[np.ndarray]
) -> None:
    assert quantize_int8(fp32_bytes, calibration) == int8_bytes
    first = quantize_int8(fp32_bytes, calibration, "percentile", per_channel=True)
    assert quantize_int8(fp32_bytes, calibration, "percentile", per_channel=True) == first
    assert first != int8_bytes


@pytest.mark.slow
def test_entropy_is_not_minmax(
    fp32_bytes: bytes, int8_bytes: bytes, calibration: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quant, "ENTROPY_BINS", 256)  # faster; ORT's own 128 would equal min-max
    assert quantize_int8(fp32_bytes, calibration[:4], "entropy") != quantize_int8(fp32_bytes, calibration[:4])


def test_calibration_is_deterministic_and_sized(dataset_dir: Path) -> None:
    first = calibration_batches(dataset_dir, SIZE, count=5, seed=3)
    again = calibration_batches(dataset_dir, SIZE, count=5, seed=3)
    other = calibration_batches(dataset_dir, SIZE, count=5, seed=4)
    assert len(first) == 5
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    for array in first:
        assert array.dtype == np.float32 and array.shape == (1, 3, 64, 64)
        assert array.min() >= 0.0 and array.max() <= 1.0
    train_frames = len(DatasetSplits.open(dataset_dir, SIZE).train)
    assert len(calibration_batches(dataset_dir, SIZE, count=1000)) == train_frames
    wide = calibration_batches(dataset_dir, (48, 32), count=1)
    assert wide[0].shape == (1, 3, 32, 48)


@pytest.mark.slow
def test_measure_quantized_latency(fp32_bytes: bytes, calibration: list[np.ndarray]) -> None:
    result = measure_quantized_latency(fp32_bytes, calibration[:2], FAST, include_fp32=True)
    assert result.fp32 is not None and result.fp32.median_s > 0
    assert result.int8.median_s > 0
    assert result.speedup == pytest.approx(result.fp32.median_s / result.int8.median_s)
    assert result.emulated and result.backend == "onnxruntime-qdq-emulation"
    assert result.device.startswith("emulation of Snapdragon DSP on ")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["emulated"] is True and data["calibration_images"] == 2
    assert data["activation_type"] == "QUInt8" and data["weight_type"] == "QInt8"
    alone = measure_quantized_latency(fp32_bytes, calibration[:2], FAST)
    assert alone.fp32 is None and alone.speedup is None and alone.int8.median_s > 0


def test_quantized_miou_in_unit_range(int8_bytes: bytes, dataset_dir: Path) -> None:
    splits = DatasetSplits.open(dataset_dir, SIZE)
    archai, global_ = quantized_miou(int8_bytes, splits.train, max_images=6, batch_size=4)
    assert 0.0 <= archai <= 1.0 and 0.0 <= global_ <= 1.0


def test_a_model_pre_processing_rejects_is_not_quantized_without_it(
    fp32_bytes: bytes, calibration: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quantizing the raw model instead would change its int8 latency with no trace."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("symbolic shape inference exploded")

    monkeypatch.setattr(quant.ortq, "quant_pre_process", broken)
    with pytest.raises(ArchNotEvaluable, match=r"pre-processing .*: symbolic shape inference exploded"):
        quantize_int8(fp32_bytes, calibration)

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(quant.ortq, "quant_pre_process", disk_full)  # the host's fault, not the model's
    with pytest.raises(MeasurementError, match="No space left") as info:
        quantize_int8(fp32_bytes, calibration)
    assert not isinstance(info.value, ArchNotEvaluable)


def test_bad_inputs(
    dataset_dir: Path, fp32_bytes: bytes, calibration: list[np.ndarray], tmp_path: Path
) -> None:
    with pytest.raises(MeasurementError):
        quantize_int8(b"not an onnx model at all", calibration)
    with pytest.raises(MeasurementError):
        quantize_int8(b"", calibration)
    with pytest.raises(InvalidInput, match="method"):
        quantize_int8(fp32_bytes, calibration, "kl")
    with pytest.raises(InvalidInput, match="calibration"):
        quantize_int8(fp32_bytes, [])
    with pytest.raises(InvalidInput, match=r"calibration\[0\]"):
        quantize_int8(fp32_bytes, [np.zeros((1, 3, 32, 32), np.float32)])
    with pytest.raises(DatasetError):
        calibration_batches(tmp_path, SIZE)
    with pytest.raises(InvalidInput, match="count"):
        calibration_batches(dataset_dir, SIZE, count=0)
