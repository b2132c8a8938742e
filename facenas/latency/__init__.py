"""Latency measurement: ONNX Runtime CPU latency under a fixed, recorded protocol, tagged with its host.

Results from hosts with different :meth:`HostInfo.fingerprint` values must not be compared or mixed.
"""

from facenas.latency.cpu import (
    DEFAULT_PROTOCOL,
    LatencyProtocol,
    LatencyResult,
    ensure_stable,
    measure_onnx_latency,
)
from facenas.latency.host import HostInfo, host_info

__all__ = [
    "DEFAULT_PROTOCOL",
    "HostInfo",
    "LatencyProtocol",
    "LatencyResult",
    "ensure_stable",
    "host_info",
    "measure_onnx_latency",
]
