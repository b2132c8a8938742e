"""latency_snp service: config and wiring.

Backends (``--backend``, see :mod:`services.latency_snp.backends`): SNPE on Snapdragon boards attached
over adb, Qualcomm AI Hub's hosted devices, the labelled int8 emulation on this host, which also
serves ``SNP Quantized Val. IOU``, or the simulation (``sim``: both objectives, labelled simulated).

Health: NOT_SERVING while the backend cannot measure (see :func:`backend_probes`: no board attached, or
onnxruntime unusable for the emulation) or the dataset (calibration images) is missing; SubmitJob is
UNAVAILABLE meanwhile.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from facenas.rpc.app import EVALUATOR, add_dataset_dir, add_job_flags, base_parser, job_servicer, run
from facenas.rpc.flags import ServiceParser
from facenas.rpc.health import Probe
from facenas.rpc.server import Registration
from services.latency_snp.backends import add_backend_flags, backend_probes, build_backend

SERVICE = "latency_snp"
#: gRPC services this server registers (and reports in gRPC health)
GRPC_SERVICES = (EVALUATOR,)


def parser() -> ServiceParser:
    p = base_parser(SERVICE, 50063)
    add_dataset_dir(
        p, "calibration images are drawn from this dataset's train split", needed=lambda a: a.backend != "sim"
    )
    add_backend_flags(p)
    add_job_flags(p)
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], Callable[[], None], Sequence[Probe]]:
    backend = build_backend(args)
    # the emulation times on this host's CPU (one slot); SNPE runs one job per attached board
    evaluator, stop_jobs = job_servicer(backend, SERVICE, ["cpu"] * max(1, backend.capacity), args)
    return [evaluator], stop_jobs, backend_probes(backend, args, [f"{EVALUATOR}/SubmitJob"])


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
