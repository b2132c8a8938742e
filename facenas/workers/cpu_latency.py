"""CPU ONNX Runtime latency as an objective: Archai's ``CPU ONNX Latency (s)``."""

from __future__ import annotations

from facenas.domain import Budget, EvalSpace
from facenas.hostgate import quiet_gate
from facenas.latency import LatencyProtocol, host_info
from facenas.latency.cpu import ensure_stable, measure_onnx_latency
from facenas.pipeline import arch_to_onnx
from facenas.space.hgnet import Arch
from facenas.workers.base import EvaluationBackend, Measurement, TargetInfo, Work, space_params_for

OBJECTIVE = "CPU ONNX Latency (s)"


class CpuLatencyBackend(EvaluationBackend):
    """Measures on this host; one measurement at a time so measurements never disturb each other, and
    none while a training step of a process sharing the quiet gate runs. A figure that stays unstable
    (a busy host, high dispersion) fails as UnstableMeasurement instead of being returned."""

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
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        work.report("export")
        export = arch_to_onnx(arch, space_params_for(space), space.img_size)
        work.report("wait-quiet")  # training on this host pauses while a latency is measured
        with quiet_gate().measuring() as window:
            work.report("measure")
            result = measure_onnx_latency(export.model_bytes, protocol=self.protocol)
        ensure_stable(result)  # an unstable figure is never kept: the searcher measures it again later
        return Measurement(result.median_s, "s", {**result.to_dict(), "quiet_gate": window.to_dict()})
