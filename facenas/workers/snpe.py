"""``SNP Quantized Latency (s)`` on real Snapdragon boards with the SNPE 2.x SDK (SPEC section 4).

Per architecture: export ONNX, convert it to a DLC, quantize it to 8 bits with calibration images
drawn from the dataset's train split, read parameters and MACs from the DLC (``htp`` also prepares
the offline HTP graph), then take a free board, push, run ``snpe-net-run`` with profiling and read the
average total inference time (:mod:`facenas.snp.profiler`). A board lost mid-job is taken out of
service and the job moves to another board; with none left it fails with UNAVAILABLE.

Results are keyed by SoC, runtime, SDK version and input size; each names the board it ran on.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from facenas.domain import Budget, EvalSpace
from facenas.errors import Unavailable
from facenas.latency.quantized import CalibrationCache, FloatArray
from facenas.pipeline import arch_to_onnx
from facenas.snp.adb import DeviceLost
from facenas.snp.boards import Board, BoardPool
from facenas.snp.profiler import BoardRunner, ProfilePlan, ProfileResult
from facenas.snp.sdk import DlcInfo, SnpeSdk, write_raw_inputs
from facenas.space.hgnet import Arch
from facenas.workers.base import (
    CheckAlive,
    EvaluationBackend,
    Measurement,
    TargetInfo,
    Work,
    space_params_for,
)

log = logging.getLogger(__name__)

OBJECTIVE = "SNP Quantized Latency (s)"
BACKEND = "snpe"


class SnpeBackend(EvaluationBackend):
    """Quantized DLC latency on the boards of ``pool``; one job per board at a time."""

    objectives = (OBJECTIVE,)

    def __init__(
        self,
        sdk: SnpeSdk,
        pool: BoardPool,
        dataset_dir: Path,
        plan: ProfilePlan | None = None,
        calibration_images: int = 16,
        profile_images: int = 4,
        hexagon_arch: str | None = None,
        enhanced_quantizer: bool = True,
        data_cache: str = "auto",
    ) -> None:
        self.sdk = sdk
        self.pool = pool
        self.dataset_dir = Path(dataset_dir)
        self.plan = plan or ProfilePlan()
        self.calibration_images = calibration_images
        self.profile_images = profile_images
        self.enhanced_quantizer = enhanced_quantizer
        self.runner = BoardRunner(pool.adb, sdk, self.plan, hexagon_arch)
        self.capacity = max(1, len(pool.healthy()))
        self._calibration = CalibrationCache(self.dataset_dir, calibration_images, data_cache)

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        if not self.pool.soc:
            raise Unavailable(self.pool.no_board_message())
        w, h = space.img_size
        return TargetInfo(
            key=f"snpe/{self.pool.soc.lower()}/{self.plan.runtime}/snpe-{self.sdk.version}/{w}x{h}",
            description=f"SNPE {self.sdk.version} {self.plan.runtime.upper()} runtime "
            f"on {self.pool.describe()}",
        )

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        check_alive = work.check_alive
        work.report("compile")
        calibration = self._calibration.get(space.img_size)
        with tempfile.TemporaryDirectory(prefix="facenas-snpe-") as tmp:
            workdir = Path(tmp)
            dlc, info = self._compile(arch, space, calibration, workdir, check_alive)
            inputs = workdir / "device-inputs"
            write_raw_inputs(calibration[: self.profile_images], inputs, device_dir="inputs")
            work.report("profile")
            result, board = self._profile_somewhere(dlc, inputs, workdir, check_alive)
        details = {
            "backend": BACKEND,
            "emulated": False,
            "device": board.describe(),
            "runtime": self.plan.runtime,
            "sdk_version": self.sdk.version,
            "perf_profile": self.plan.perf_profile,
            "params": info.params,
            "macs": info.macs,
            "calibration_images": len(calibration),
            "profile_images": min(self.profile_images, len(calibration)),
            "avg_total_inference_time_us": result.mean_us,
            **result.to_dict(),
        }
        return Measurement(result.mean_us / 1e6, "s", details)

    def _compile(
        self,
        arch: Arch,
        space: EvalSpace,
        calibration: list[FloatArray],
        workdir: Path,
        check_alive: CheckAlive,
    ) -> tuple[Path, DlcInfo]:
        """ONNX -> DLC -> 8-bit DLC (-> HTP-prepared DLC); returns the DLC to run and its facts."""
        export = arch_to_onnx(arch, space_params_for(space), space.img_size)
        onnx_path = export.save(workdir / "model.onnx")
        float_dlc, quant_dlc = workdir / "model.dlc", workdir / "model.quant.dlc"
        self.sdk.convert(
            onnx_path, float_dlc, export.input_name, export.input_shape, export.output_name, check_alive
        )
        calibration_list = write_raw_inputs(calibration, workdir / "calibration")
        self.sdk.quantize(float_dlc, calibration_list, quant_dlc, self.enhanced_quantizer, check_alive)
        info = self.sdk.info(quant_dlc)
        if self.plan.runtime == "htp":
            prepared = workdir / "model.quant.htp.dlc"
            self.sdk.graph_prepare(quant_dlc, prepared, self.pool.soc or "", check_alive)
            return prepared, info
        return quant_dlc, info

    def _profile_somewhere(
        self, dlc: Path, inputs: Path, workdir: Path, check_alive: CheckAlive
    ) -> tuple[ProfileResult, Board]:
        """Profile on a free board; a board lost mid-job is skipped and the job tried on another."""
        lost: set[str] = set()
        while True:
            try:
                with self.pool.lease(check_alive, frozenset(lost)) as board:
                    self.runner.prepare(board, check_alive)
                    return self.runner.profile(board, dlc, inputs, workdir / board.serial, check_alive), board
            except DeviceLost as err:
                lost.add(err.serial)
                log.warning(
                    "board lost mid-job, moving on", extra={"serial": err.serial, "error": err.reason}
                )
