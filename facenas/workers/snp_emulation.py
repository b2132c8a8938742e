"""The SNP objectives without a Snapdragon board: an emulation, labelled as such.

``SNP Quantized Latency (s)``: the model is quantized to int8 (onnxruntime static QDQ, calibrated on
dataset images) and timed on this host with the CPU protocol. It ranks architectures by what int8 costs
on a CPU, not by DSP latency: every result says ``emulated: true`` and names the host it ran on.

``SNP Quantized Val. IOU``: the accuracy of the int8 model that would ship. The architecture is partially
trained exactly as the trainer does (same recipe, seed and splits), exported, quantized the same way as
for latency with calibration images from the train split, and evaluated on the validation split with
onnxruntime. The value is Archai's per-batch mIOU of the int8 model; the details also give the fp32 ONNX
mIOU of the same weights on the same images and the drop. Its target key names the dataset, the split and
the quantization setup, so results from another dataset or another recipe never mix.

One evaluation at a time (``capacity = 1``): this service's own training never overlaps its timings.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnxruntime as ort

from facenas.data.cache import cache_for
from facenas.data.facesynth import split_indices
from facenas.domain import Budget, EvalSpace
from facenas.hostgate import QuietWindow, quiet_gate
from facenas.latency import LatencyProtocol, ensure_stable, host_info
from facenas.latency.quantized import (
    ACTIVATION_TYPE,
    WEIGHT_TYPE,
    CalibrationCache,
    emulated_device,
    measure_quantized_latency,
    onnx_miou,
    quantize_int8,
)
from facenas.model import export_onnx
from facenas.pipeline import DatasetSplits, arch_to_onnx, partial_train_model
from facenas.space.hgnet import Arch
from facenas.train.loop import resolve_device
from facenas.workers.base import (
    EvaluationBackend,
    Measurement,
    TargetInfo,
    Work,
    dataset_key,
    space_params_for,
    split_key,
    step_reporter,
)
from facenas.workers.trainer import training_config

OBJECTIVE = "SNP Quantized Latency (s)"
IOU_OBJECTIVE = "SNP Quantized Val. IOU"
BACKEND = "onnxruntime-qdq-emulation"
#: Quantization of both objectives (measure_quantized_latency's defaults): the model timed is the one scored.
METHOD = "minmax"
PER_CHANNEL = False
#: The split latency calibration has always drawn from (its target key names no split).
_LATENCY_SPLIT = (0.02, 0.10)


class SnpEmulationBackend(EvaluationBackend):
    """int8 QDQ latency and int8 val mIOU on this host; one evaluation at a time."""

    objectives = (OBJECTIVE, IOU_OBJECTIVE)
    capacity = 1

    def __init__(
        self,
        dataset_dir: Path,
        protocol: LatencyProtocol | None = None,
        calibration_images: int = 16,
        val_fraction: float = 0.02,
        test_fraction: float = 0.10,
        device: str = "cpu",
        data_cache: str = "auto",
    ):
        self.dataset_dir = Path(dataset_dir)
        self.protocol = protocol or LatencyProtocol()
        self.calibration_images = calibration_images
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.device = device
        training_config(Budget(), device)  # a bad device or split fails here, not at the first request
        split_indices(0, val_fraction, test_fraction)
        self.dataset_key = dataset_key(self.dataset_dir)  # fails early on a bad directory
        self.data_cache = data_cache  # --data-cache: see facenas.data.cache.cache_for
        self._calibration = CalibrationCache(self.dataset_dir, calibration_images, data_cache)
        self._splits: dict[tuple[int, int], DatasetSplits] = {}

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        w, h = space.img_size
        threads = self.protocol.intra_op_threads
        if objective == IOU_OBJECTIVE:
            split = split_key(self.val_fraction, self.test_fraction)
            return TargetInfo(
                key=f"snp-emulation-iou/{self.dataset_key}/{split}/{self.quantization_key()}",
                description=f"int8 val mIOU after partial training on {self.dataset_dir} "
                f"({resolve_device(self.device)}), {emulated_device()} ({BACKEND}); "
                "not a Snapdragon measurement",
                emulated=True,
            )
        return TargetInfo(
            key=f"snp-emulation/{host_info().fingerprint()}/t{threads}/{w}x{h}",
            description=f"{emulated_device()} ({BACKEND}, {threads} thread(s)); not a Snapdragon measurement",
            emulated=True,
        )

    def quantization_key(self) -> str:
        """The quantization setup, e.g. ``qdq-quint8-qint8-minmax-tensor-cal16-ort1.22.0``."""
        granularity = "channel" if PER_CHANNEL else "tensor"
        types = f"{ACTIVATION_TYPE.name}-{WEIGHT_TYPE.name}".lower()
        return f"qdq-{types}-{METHOD}-{granularity}-cal{self.calibration_images}-ort{ort.__version__}"

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        self.check_objective(objective)
        if objective == IOU_OBJECTIVE:
            return self._quantized_iou(arch, space, budget, work)
        work.report("calibrate")
        calibration = self._calibration.get(space.img_size, _LATENCY_SPLIT)
        work.report("export")
        export = arch_to_onnx(arch, space_params_for(space), space.img_size)
        work.report("quantize")
        windows: list[QuietWindow] = []

        @contextlib.contextmanager
        def quiet() -> Iterator[None]:  # training on this host pauses while the int8 model is timed
            work.report("wait-quiet")
            with quiet_gate().measuring() as window:
                windows.append(window)
                work.report("measure")
                yield

        result = measure_quantized_latency(export.model_bytes, calibration, self.protocol, quiet=quiet)
        ensure_stable(result.int8)  # an unstable figure is never kept: the searcher measures it again
        details = {
            **result.to_dict(),
            "emulated": True,
            "backend": BACKEND,
            "quiet_gate": windows[0].to_dict(),
        }
        return Measurement(result.int8.median_s, "s", details)

    def _quantized_iou(self, arch: Arch, space: EvalSpace, budget: Budget, work: Work) -> Measurement:
        """Partial training as the trainer does it, then int8 QDQ and val mIOU with onnxruntime."""
        work.report("load")
        data = self._data(space.img_size)
        config = training_config(budget, self.device)
        calibration = self._calibration.get(space.img_size, (self.val_fraction, self.test_fraction))
        began = time.perf_counter()
        with quiet_gate().working() as gate:  # a CPU latency measurement on this host pauses the training
            on_step = step_reporter(work, between_steps=gate.yield_point)
            model, trained = partial_train_model(arch, space_params_for(space), data, config, on_step)
        work.report("quantize")
        quantizing = time.perf_counter()
        export = export_onnx(model.cpu(), space.img_size, space.in_channels)
        int8_bytes = quantize_int8(export.model_bytes, calibration, METHOD, PER_CHANNEL)
        work.report("evaluate")
        evaluating = time.perf_counter()
        batch = config.eval_batch_size  # partial training's evaluation batches
        max_images = config.max_eval_batches * batch if config.max_eval_batches else None
        int8_miou, int8_global = onnx_miou(int8_bytes, data.val, space.num_classes, max_images, batch)
        work.check_alive()
        fp32_miou, fp32_global = onnx_miou(export.model_bytes, data.val, space.num_classes, max_images, batch)
        details: dict[str, Any] = {
            "int8_miou": int8_miou,
            "int8_miou_global": int8_global,
            "fp32_miou": fp32_miou,
            "fp32_miou_global": fp32_global,
            "miou_drop": fp32_miou - int8_miou,
            "miou_global_drop": fp32_global - int8_global,
            "eval_images": len(data.val) if max_images is None else min(max_images, len(data.val)),
            "eval_batch_size": batch,
            "partial_training": trained.to_dict(),
            "calibration_images": len(calibration),
            "method": METHOD,
            "per_channel": PER_CHANNEL,
            "activation_type": ACTIVATION_TYPE.name,
            "weight_type": WEIGHT_TYPE.name,
            "quant_format": "QDQ",
            "int8_sha256": hashlib.sha256(int8_bytes).hexdigest(),
            "onnxruntime": ort.__version__,
            "device": emulated_device(),
            "emulated": True,
            "backend": BACKEND,
            "seconds": {
                "train": quantizing - began,
                "quantize": evaluating - quantizing,
                "evaluate": time.perf_counter() - evaluating,
            },
        }
        return Measurement(int8_miou, "miou", details)

    def _data(self, img_size: tuple[int, int]) -> DatasetSplits:
        if img_size not in self._splits:
            cache = cache_for(self.data_cache, self.dataset_dir, img_size)
            self._splits[img_size] = DatasetSplits.open(
                self.dataset_dir, img_size, self.val_fraction, self.test_fraction, cache
            )
        return self._splits[img_size]
