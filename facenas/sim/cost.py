"""An analytic cost model of an hgnet architecture, and the simulated latency it gives on two targets.

:func:`cost_of` counts, from the spec alone (the convolutions the builder creates, at their resolutions),
the multiply-accumulates, the parameters, the tensor elements read and written, and the graph ops. A
:class:`LatencyModel` turns them into seconds: ``base + a*MACs + b*bytes moved + c*ops``, with fp32
coefficients for a CPU (one onnxruntime thread) and int8 ones for a Snapdragon DSP. The coefficients are
plausible magnitudes, not a calibration of any device: simulated latencies rank architectures the way
compute, memory traffic and op count do, and are meant for trying configs and algorithms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from facenas.space.spec import ArchSpec


@dataclass(frozen=True)
class Cost:
    """What one image through the model costs."""

    macs: int
    params: int
    activations: int  # tensor elements read and written by the convolutions
    weights: int  # weight elements read (once per image)
    convs: int
    ops: int  # graph ops: conv, BatchNorm and ReLU per op, upsamples, skip additions, the head

    def bytes_moved(self, bytes_per_element: int) -> int:
        return (self.activations + self.weights) * bytes_per_element

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost_of(spec: ArchSpec, num_classes: int, img_size: tuple[int, int], in_channels: int = 3) -> Cost:
    """The :class:`Cost` of ``spec`` for one ``img_size`` (w, h) image."""
    w, h = img_size
    macs = activations = weights = ops = 0
    layers = spec.layers(num_classes, in_channels)
    for layer in layers:
        pixels = max(1, w // layer.divisor) * max(1, h // layer.divisor)
        macs += layer.parameters_weight * pixels
        activations += (layer.cin + layer.cout) * pixels
        weights += layer.parameters_weight
        ops += 1 if layer.bias else 3  # a plain 1x1 conv, or conv + BatchNorm + ReLU
    merges = sum(len(hg.up) for hg in spec.hourglasses)
    ops += 2 * merges + 1  # an upsample and an addition per merge, the final upsample
    params = spec.num_parameters(num_classes, in_channels)
    return Cost(macs, params, activations, weights, len(layers), ops)


@dataclass(frozen=True)
class LatencyModel:
    """``base_s + s_per_mac*MACs + s_per_byte*bytes + s_per_op*ops`` on one target."""

    name: str
    base_s: float
    s_per_mac: float
    s_per_byte: float
    s_per_op: float
    bytes_per_element: int

    def seconds(self, cost: Cost) -> float:
        return (
            self.base_s
            + self.s_per_mac * cost.macs
            + self.s_per_byte * cost.bytes_moved(self.bytes_per_element)
            + self.s_per_op * cost.ops
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: fp32 on one CPU core: ~20 GMAC/s, ~10 GB/s, ~5 us of dispatch per op.
CPU_FP32 = LatencyModel("cpu-fp32", 50e-6, 5e-11, 1e-10, 5e-6, 4)
#: int8 on a Snapdragon DSP: ~400 GMAC/s, ~20 GB/s, ~20 us per op (its graphs fuse BN and ReLU: fewer
#: ops, but each costs more to launch), 1 ms to start an inference.
SNP_INT8 = LatencyModel("snp-int8", 1e-3, 2.5e-12, 5e-11, 2e-5, 1)
