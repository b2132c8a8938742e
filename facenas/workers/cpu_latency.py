"""CPU ONNX Runtime latency as an objective: Archai's ``CPU ONNX Latency (s)``."""

from __future__ import annotations

from facenas.domain import Budget, EvalSpace
from facenas.latency import LatencyProtocol, host_info
from facenas.pipeline import measure_arch_latency
from facenas.space.hgnet import Arch
from facenas.workers.base import CheckAlive, EvaluationBackend, Measurement, TargetInfo, space_params_for

OBJECTIVE = "CPU ONNX Latency (s)"


class CpuLatencyBackend(EvaluationBackend):
    """Measures on this host; one measurement at a time so measurements never disturb each other."""

    objectives = (OBJECTIVE,)
    capacity = 1

    def __init__(self, protocol: LatencyProtocol | None = None) -> None:
        self.protocol = protocol or LatencyProtocol()

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        host = host_info()
        w, h = space.img_size
        return TargetInfo(
            key=f"cpu/{host.fingerprint()}/t{self.protocol.intra_op_threads}/{w}x{h}",
            description=f"onnxruntime {host.onnxruntime_version} CPU on {host.cpu_model}, "
            f"{self.protocol.intra_op_threads} thread(s)",
        )

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, check_alive: CheckAlive
    ) -> Measurement:
        check_alive()
        result = measure_arch_latency(arch, space_params_for(space), self.protocol, space.img_size)
        return Measurement(result.median_s, "s", result.to_dict())
