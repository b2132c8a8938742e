"""Int8 latency, emulated on this host: the stand-in for a Snapdragon DSP when no board is attached.

The SNPE path (SPEC section 4) quantizes the model to 8 bits with dataset images as calibration data and
times it on the DSP. Without a board, :func:`quantize_int8` quantizes it with ONNX Runtime's static
quantization in QDQ format (QuantizeLinear/DequantizeLinear pairs, which ORT's CPU provider fuses into
integer kernels) and :func:`measure_quantized_latency` times it with the CPU protocol of
:mod:`facenas.latency.cpu`. The figures are labelled as an emulation: they track how a model quantizes
and how its int8 cost scales, not the DSP's absolute speed.

Types: activations ``QUInt8`` (asymmetric, like SNPE's 8-bit activations; post-ReLU tensors use the
whole range), weights ``QInt8`` (symmetric), ``reduce_range=False``: ORT's recommendation for x86-64
with VNNI. The choice is fixed, not per host, so a model quantizes to the same bytes everywhere; on x86
without VNNI (where ORT advises ``reduce_range``, as 8-bit products may saturate) and on ARM (where it
prefers S8 activations) the int8 accuracy and speed on this host may be a little worse than necessary.

Calibration is run here (``create_calibrator``) and handed to ``quantize_static`` as a calibration
cache, because ``quantize_static`` cannot set the histogram size: with its defaults (128 bins, 128
quantized bins) the entropy method has a single candidate threshold and equals min-max. Here entropy
uses :data:`ENTROPY_BINS` bins. Quantization is deterministic on this host (same inputs, byte-identical
output; checked by the tests and by ``bench/quantization.py``). ORT's calibrators print progress; that
is silenced by redirecting ``sys.stdout``, which is process-wide while a quantization runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime import quantization as ortq

from facenas.errors import ArchNotEvaluable, DatasetError, FacenasError, InvalidInput, MeasurementError
from facenas.latency.cpu import (
    DEFAULT_PROTOCOL,
    LatencyProtocol,
    LatencyResult,
    load_error,
    measure_onnx_latency,
    out_of_memory,
)
from facenas.latency.host import host_info

if TYPE_CHECKING:
    from facenas.data.facesynth import FaceDataset

BACKEND = "onnxruntime-qdq-emulation"
METHODS: dict[str, Any] = {
    "minmax": ortq.CalibrationMethod.MinMax,
    "entropy": ortq.CalibrationMethod.Entropy,
    "percentile": ortq.CalibrationMethod.Percentile,
}
ACTIVATION_TYPE = ortq.QuantType.QUInt8
WEIGHT_TYPE = ortq.QuantType.QInt8
ENTROPY_BINS = 512  # histogram bins of the entropy method; 128 quantized bins (2048 took ~25 s a model)

FloatArray = npt.NDArray[np.float32]


# ---------------------------------------------------------------------------------------- calibration


def calibration_batches(
    dataset_dir: str | os.PathLike[str],
    img_size: tuple[int, int] = (256, 256),
    count: int = 16,
    seed: int = 0,
    val_fraction: float = 0.02,
    test_fraction: float = 0.10,
    cache: str | os.PathLike[str] | None = "auto",
) -> list[FloatArray]:
    """Draw ``count`` train-split images (fewer if the split is smaller), seeded, without replacement.

    Each is a float32 ``(1, 3, h, w)`` array in [0, 1], preprocessed as for training; ``img_size`` is
    ``(w, h)``; the split is the one ``val_fraction`` and ``test_fraction`` leave for training, so
    calibration never sees validation images. Images come through :func:`facenas.data.cache.open_split`
    (``cache``: a cache directory, "auto" or None). Raises DatasetError when the directory holds no
    usable frames.
    """
    from facenas.data.cache import open_split

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidInput(f"count must be a positive int, got {count!r}")
    dataset = open_split(dataset_dir, "train", img_size, val_fraction, test_fraction, cache)
    picks = np.random.default_rng(seed).choice(len(dataset), size=min(count, len(dataset)), replace=False)
    return [dataset[int(i)][0].numpy()[None].astype(np.float32, copy=False) for i in picks]


class CalibrationCache:
    """:func:`calibration_batches` of one dataset, drawn once per (image size, split); thread-safe."""

    def __init__(
        self, dataset_dir: str | os.PathLike[str], count: int = 16, data_cache: str = "auto"
    ) -> None:
        self.dataset_dir = dataset_dir
        self.count = count
        self.data_cache = data_cache  # a service's --data-cache (see facenas.data.cache.cache_for)
        self._drawn: dict[tuple[tuple[int, int], tuple[float, float]], list[FloatArray]] = {}
        self._lock = threading.Lock()

    def get(self, img_size: tuple[int, int], split: tuple[float, float] = (0.02, 0.10)) -> list[FloatArray]:
        """The calibration arrays at ``img_size`` from the train split ``split`` = (val, test) leaves."""
        from facenas.data.cache import cache_for

        with self._lock:
            key = (img_size, split)
            if key not in self._drawn:
                cache = cache_for(self.data_cache, self.dataset_dir, img_size)
                self._drawn[key] = calibration_batches(
                    self.dataset_dir, img_size, self.count, 0, *split, cache
                )
            return self._drawn[key]


class ArrayDataReader(ortq.CalibrationDataReader):  # type: ignore[misc]  # ORT is untyped
    """Feeds a fixed list of arrays to ORT's calibrators, one ``{input_name: array}`` per call."""

    def __init__(self, input_name: str, arrays: Sequence[FloatArray]) -> None:
        self.input_name = input_name
        self.arrays = list(arrays)
        self._next = 0

    def get_next(self) -> dict[str, FloatArray] | None:
        """Return the next feed, or None when the list is exhausted."""
        if self._next >= len(self.arrays):
            return None
        self._next += 1
        return {self.input_name: self.arrays[self._next - 1]}

    def rewind(self) -> None:
        """Start again from the first array."""
        self._next = 0

    def __len__(self) -> int:
        return len(self.arrays)


def model_input(onnx_bytes: bytes) -> tuple[str, tuple[int, ...]]:
    """Return the name and static shape of the model's single graph input; MeasurementError if unusable."""
    import onnx

    try:
        graph = onnx.load_from_string(onnx_bytes).graph
    except Exception as exc:
        raise MeasurementError(f"cannot parse ONNX model: {exc}") from exc
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise MeasurementError(f"model must have exactly one input, it has {len(inputs)}")
    dims = tuple(d.dim_value for d in inputs[0].type.tensor_type.shape.dim)
    if not dims or not all(d > 0 for d in dims):
        raise MeasurementError(f"input {inputs[0].name!r} must have a static shape, got {dims}")
    return inputs[0].name, dims


def _check_calibration(calibration: Sequence[FloatArray], shape: tuple[int, ...]) -> None:
    """InvalidInput unless there is at least one float32 array of the model's input shape."""
    if not calibration:
        raise InvalidInput("calibration needs at least one array")
    for index, array in enumerate(calibration):
        if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.shape != shape:
            what = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
            raise InvalidInput(f"calibration[{index}] is {what}; expected float32 {shape}")


# ---------------------------------------------------------------------------------------- quantization


def _pre_process(source: Path, target: Path) -> Path:
    """Shape inference and graph optimisation; returns ``target``. A model that cannot be pre-processed is
    not quantized without it, which would change its int8 latency unseen: ArchNotEvaluable (the step
    depends only on the model), MeasurementError when the host failed it (a file, memory)."""
    try:
        ortq.quant_pre_process(str(source), str(target))
    except Exception as exc:
        message = f"int8 quantization failed in pre-processing (shape inference, optimisation): {exc}"
        if isinstance(exc, OSError) or out_of_memory(exc):
            raise MeasurementError(message) from exc
        raise ArchNotEvaluable(message) from exc
    if not target.is_file():
        raise MeasurementError("int8 quantization failed: pre-processing wrote no model")
    return target


def _calibrate(model: Path, reader: ArrayDataReader, method: str, workdir: Path) -> Path:
    """Collect activation ranges on ``model``; return the calibration-cache file holding them."""
    options = {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128} if method == "entropy" else {}
    calibrator = ortq.create_calibrator(
        model,
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=METHODS[method],
        providers=["CPUExecutionProvider"],
        extra_options=options,
    )
    calibrator.collect_data(reader)
    cache = workdir / "calibration.json"
    ortq.save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _quantize_in(
    workdir: Path, onnx_bytes: bytes, reader: ArrayDataReader, method: str, per_channel: bool
) -> bytes:
    """Pre-process, calibrate and quantize inside ``workdir``; return the int8 model's bytes."""
    source = workdir / "fp32.onnx"
    source.write_bytes(onnx_bytes)
    model = _pre_process(source, workdir / "pre.onnx")
    cache = _calibrate(model, reader, method, workdir)
    target = workdir / "int8.onnx"
    ortq.quantize_static(
        str(model),
        str(target),
        reader,
        quant_format=ortq.QuantFormat.QDQ,
        per_channel=per_channel,
        reduce_range=False,
        activation_type=ACTIVATION_TYPE,
        weight_type=WEIGHT_TYPE,
        calibrate_method=METHODS[method],
        calibration_cache_path=str(cache),
    )
    return target.read_bytes()


def quantize_int8(
    onnx_bytes: bytes,
    calibration: Sequence[FloatArray],
    method: str = "minmax",
    per_channel: bool = False,
) -> bytes:
    """Statically quantize an fp32 ONNX model to int8 (QDQ, U8 activations, S8 weights).

    ``calibration`` holds float32 arrays of the model's input shape (see :func:`calibration_batches`);
    ``method`` is one of :data:`METHODS`; ``per_channel`` quantizes weights per output channel.
    Raises InvalidInput for bad arguments, ArchNotEvaluable when onnxruntime rejects the model and
    MeasurementError when it cannot be quantized for another reason.
    """
    if method not in METHODS:
        raise InvalidInput(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if not isinstance(onnx_bytes, bytes) or not onnx_bytes:
        raise MeasurementError("cannot quantize: the model bytes are empty or not bytes")
    name, shape = model_input(onnx_bytes)
    _check_calibration(calibration, shape)
    reader = ArrayDataReader(name, calibration)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="facenas-quant-") as tmp,
            contextlib.redirect_stdout(io.StringIO()),  # ORT's calibrators print progress
        ):
            return _quantize_in(Path(tmp), onnx_bytes, reader, method, per_channel)
    except FacenasError:
        raise
    except Exception as exc:
        raise load_error(f"int8 quantization failed: {exc}", exc) from exc


# ---------------------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class QuantizedLatency:
    """Int8 latency (and optionally fp32 and the speedup) of one model, measured as a device emulation."""

    int8: LatencyResult
    fp32: LatencyResult | None
    speedup: float | None  # fp32 median / int8 median
    method: str
    per_channel: bool
    calibration_images: int
    int8_sha256: str
    device: str
    activation_type: str = ACTIVATION_TYPE.name
    weight_type: str = WEIGHT_TYPE.name
    quant_format: str = "QDQ"
    emulated: bool = True
    backend: str = BACKEND

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-friendly dict (latency results nested as dicts)."""
        data: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["int8"] = self.int8.to_dict()
        data["fp32"] = self.fp32.to_dict() if self.fp32 is not None else None
        return data


def emulated_device() -> str:
    """The label of what the emulation stands for and where it ran."""
    return f"emulation of Snapdragon DSP on {host_info().cpu_model}"


def measure_quantized_latency(
    onnx_bytes: bytes,
    calibration: Sequence[FloatArray],
    protocol: LatencyProtocol = DEFAULT_PROTOCOL,
    include_fp32: bool = False,
    method: str = "minmax",
    per_channel: bool = False,
    quiet: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> QuantizedLatency:
    """Quantize ``onnx_bytes`` with :func:`quantize_int8` and time it (and the fp32 model if asked);
    ``quiet()`` is entered around the timing only (e.g. the host's quiet gate), not the quantization."""
    int8_bytes = quantize_int8(onnx_bytes, calibration, method, per_channel)
    with quiet():
        fp32 = measure_onnx_latency(onnx_bytes, protocol=protocol) if include_fp32 else None
        int8 = measure_onnx_latency(int8_bytes, protocol=protocol)
    return QuantizedLatency(
        int8=int8,
        fp32=fp32,
        speedup=fp32.median_s / int8.median_s if fp32 is not None else None,
        method=method,
        per_channel=per_channel,
        calibration_images=len(calibration),
        int8_sha256=hashlib.sha256(int8_bytes).hexdigest(),
        device=emulated_device(),
    )


# ---------------------------------------------------------------------------------------- accuracy


def _predictions(model_bytes: bytes, dataset: FaceDataset, limit: int) -> Iterator[tuple[Any, Any]]:
    """Yield ``(argmax prediction, mask)`` torch tensors for the first ``limit`` items, batch 1."""
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise load_error(f"cannot load ONNX model: {exc}", exc) from exc
    name = session.get_inputs()[0].name
    for index in range(limit):
        image, mask = dataset[index]
        (logits,) = session.run(None, {name: image.numpy()[None]})[:1]
        yield torch.from_numpy(np.asarray(logits).argmax(axis=1)), mask[None]


def onnx_miou(
    model_bytes: bytes,
    dataset: FaceDataset,
    num_classes: int = 18,
    max_images: int | None = None,
    batch_size: int = 16,
) -> tuple[float, float]:
    """Return (Archai per-batch mIOU, global-confusion mIOU) of an ONNX model over ``dataset``.

    Inference runs one image at a time; confusion matrices are grouped by ``batch_size`` consecutive
    images, so the per-batch figure matches partial training's evaluation with that batch size.
    """
    import torch

    from facenas.train.metrics import confusion_matrix, miou_archai, miou_global

    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
    limit = len(dataset) if max_images is None else min(max_images, len(dataset))
    if limit < 1:
        raise DatasetError("no images to evaluate")
    total = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    batch = torch.zeros_like(total)
    batch_mious: list[float] = []
    for index, (pred, mask) in enumerate(_predictions(model_bytes, dataset, limit)):
        batch += confusion_matrix(pred, mask, num_classes)
        if (index + 1) % batch_size == 0 or index + 1 == limit:
            batch_mious.append(miou_archai(batch))
            total += batch
            batch.zero_()
    return math.fsum(batch_mious) / len(batch_mious), miou_global(total)


def quantized_miou(
    int8_bytes: bytes,
    dataset: FaceDataset,
    num_classes: int = 18,
    max_images: int | None = None,
    batch_size: int = 16,
) -> tuple[float, float]:
    """(Archai per-batch mIOU, global mIOU) of a quantized model; see :func:`onnx_miou`."""
    return onnx_miou(int8_bytes, dataset, num_classes, max_images, batch_size)
