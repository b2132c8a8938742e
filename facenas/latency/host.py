"""Description of the host a latency was measured on.

Latencies are only comparable between runs on the same kind of CPU, so every result carries a
:class:`HostInfo` and its :meth:`HostInfo.fingerprint`; callers must never mix results whose fingerprints
differ.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import onnxruntime as ort

_CPUINFO = Path("/proc/cpuinfo")

# Flags that change which kernels ONNX Runtime (MLAS) picks, hence its speed.
_RELEVANT_ISA = frozenset(
    {
        # x86-64
        "sse4_1",
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx_vnni",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
        # aarch64 ("asimd" is NEON)
        "neon",
        "asimd",
        "asimdhp",
        "asimddp",
        "i8mm",
        "bf16",
        "sve",
        "sve2",
        "sme",
    }
)


@dataclass(frozen=True)
class HostInfo:
    """What the measuring host is: CPU, ISA, CPU counts and software versions."""

    cpu_model: str
    machine: str
    isa: tuple[str, ...]
    logical_cpus: int
    usable_cpus: int
    os: str
    python: str
    onnxruntime_version: str

    def fingerprint(self) -> str:
        """Return a short stable hash of CPU model, machine and ISA (not of counts or versions)."""
        key = "|".join((self.cpu_model, self.machine, ",".join(self.isa)))
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-friendly dict, including the fingerprint."""
        data: dict[str, object] = asdict(self)
        data["isa"] = list(self.isa)
        data["fingerprint"] = self.fingerprint()
        return data


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """Return the first value of every ``key : value`` line of a /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _read_cpuinfo() -> dict[str, str]:
    """Return /proc/cpuinfo's fields, or ``{}`` where it cannot be read (not Linux)."""
    try:
        return _cpuinfo_fields(_CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


def _cpu_model(fields: dict[str, str]) -> str:
    """Return the CPU model name, falling back to platform data, never empty."""
    for key in ("model name", "hardware", "processor"):
        value = fields.get(key, "")
        if value and not value.isdigit():
            return value
    return platform.processor() or platform.machine() or "unknown"


def _isa(fields: dict[str, str]) -> tuple[str, ...]:
    """Return the sorted relevant ISA flags ("flags" on x86, "features" on ARM)."""
    flags = set((fields.get("flags", "") + " " + fields.get("features", "")).split())
    return tuple(sorted(flags & _RELEVANT_ISA))


def _usable_cpus() -> int:
    """Return how many CPUs this process may run on (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _collect() -> HostInfo:
    """Probe the host (uncached)."""
    fields = _read_cpuinfo()
    return HostInfo(
        cpu_model=_cpu_model(fields),
        machine=platform.machine() or "unknown",
        isa=_isa(fields),
        logical_cpus=os.cpu_count() or 1,
        usable_cpus=_usable_cpus(),
        os=platform.platform(),
        python=platform.python_version(),
        onnxruntime_version=str(ort.__version__),
    )


@functools.cache
def host_info() -> HostInfo:
    """Return this host's :class:`HostInfo` (probed once per process)."""
    return _collect()
