"""latency_snp service: config and wiring.

Backends (``--backend``, see :mod:`services.latency_snp.backends`): SNPE on Snapdragon boards attached
over adb, Qualcomm AI Hub's hosted devices, or the labelled int8 emulation on this host, which also
serves ``SNP Quantized Val. IOU``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from facenas.rpc.app import add_dataset_dir, base_parser, run
from facenas.rpc.evaluator import EvaluatorServicer
from facenas.rpc.server import Registration
from facenas.v1 import common_pb2_grpc
from services.latency_snp.backends import add_backend_flags, build_backend

SERVICE = "latency_snp"
EVALUATOR = "facenas.v1.Evaluator"


def parser() -> argparse.ArgumentParser:
    p = base_parser(SERVICE, 50063)
    add_dataset_dir(p, "calibration images are drawn from this dataset's train split")
    add_backend_flags(p)
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], None]:
    backend = build_backend(args)
    return [
        (common_pb2_grpc.add_EvaluatorServicer_to_server, EvaluatorServicer(backend, SERVICE), EVALUATOR)
    ], None


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
