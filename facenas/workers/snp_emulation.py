"""``SNP Quantized Latency (s)`` without a Snapdragon board: an emulation, labelled as such.

The model is quantized to int8 (onnxruntime static QDQ, calibrated on dataset images) and timed on this
host with the CPU protocol. It ranks architectures by what int8 costs on a CPU, not by DSP latency: every
result says ``emulated: true`` and names the host it ran on.
"""

from __future__ import annotations

from pathlib import Path

from facenas.domain import Budget, EvalSpace
from facenas.latency import LatencyProtocol, host_info
from facenas.latency.quantized import (
    FloatArray,
    calibration_batches,
    emulated_device,
    measure_quantized_latency,
)
from facenas.pipeline import arch_to_onnx
from facenas.space.hgnet import Arch
from facenas.workers.base import CheckAlive, EvaluationBackend, Measurement, TargetInfo, space_params_for

OBJECTIVE = "SNP Quantized Latency (s)"
BACKEND = "onnxruntime-qdq-emulation"


class SnpEmulationBackend(EvaluationBackend):
    """int8 QDQ latency on this host; one measurement at a time."""

    objectives = (OBJECTIVE,)
    capacity = 1

    def __init__(
        self, dataset_dir: Path, protocol: LatencyProtocol | None = None, calibration_images: int = 16
    ):
        self.dataset_dir = Path(dataset_dir)
        self.protocol = protocol or LatencyProtocol()
        self.calibration_images = calibration_images
        self._calibration: dict[tuple[int, int], list[FloatArray]] = {}

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        w, h = space.img_size
        threads = self.protocol.intra_op_threads
        return TargetInfo(
            key=f"snp-emulation/{host_info().fingerprint()}/t{threads}/{w}x{h}",
            description=f"{emulated_device()} ({BACKEND}, {threads} thread(s)); not a Snapdragon measurement",
            emulated=True,
        )

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, check_alive: CheckAlive
    ) -> Measurement:
        calibration = self._calibration_for(space.img_size)
        check_alive()
        export = arch_to_onnx(arch, space_params_for(space), space.img_size)
        result = measure_quantized_latency(export.model_bytes, calibration, self.protocol)
        details = {**result.to_dict(), "emulated": True, "backend": BACKEND}
        return Measurement(result.int8.median_s, "s", details)

    def _calibration_for(self, img_size: tuple[int, int]) -> list[FloatArray]:
        if img_size not in self._calibration:
            self._calibration[img_size] = calibration_batches(
                self.dataset_dir, img_size, self.calibration_images
            )
        return self._calibration[img_size]
