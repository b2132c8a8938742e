"""latency_snp service: config and wiring. Its only backend today is the labelled int8 emulation."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from facenas.latency import LatencyProtocol
from facenas.rpc.app import add_dataset_dir, base_parser, env, run
from facenas.rpc.evaluator import EvaluatorServicer
from facenas.rpc.server import Registration
from facenas.v1 import common_pb2_grpc
from facenas.workers.snp_emulation import SnpEmulationBackend

SERVICE = "latency_snp"
EVALUATOR = "facenas.v1.Evaluator"


def parser() -> argparse.ArgumentParser:
    p = base_parser(SERVICE, 50063)
    add_dataset_dir(p, "calibration images are drawn from this dataset's train split")
    p.add_argument("--calibration-images", type=int, default=int(env("calibration_images", 16)))
    p.add_argument("--threads", type=int, default=int(env("threads", 1)), help="onnxruntime intra-op threads")
    p.add_argument("--rounds", type=int, default=int(env("rounds", 7)))
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], None]:
    protocol = LatencyProtocol(intra_op_threads=args.threads, rounds=args.rounds)
    backend = SnpEmulationBackend(args.dataset_dir, protocol, args.calibration_images)
    return [
        (common_pb2_grpc.add_EvaluatorServicer_to_server, EvaluatorServicer(backend, SERVICE), EVALUATOR)
    ], None


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
