"""latency_cpu service: config and wiring (the logic lives in ``facenas.workers.cpu_latency``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from facenas.latency import LatencyProtocol
from facenas.rpc.app import base_parser, env, run
from facenas.rpc.evaluator import EvaluatorServicer
from facenas.rpc.server import Registration
from facenas.v1 import common_pb2_grpc
from facenas.workers.cpu_latency import CpuLatencyBackend

SERVICE = "latency_cpu"
EVALUATOR = "facenas.v1.Evaluator"


def parser() -> argparse.ArgumentParser:
    p = base_parser(SERVICE, 50062)
    p.add_argument("--threads", type=int, default=int(env("threads", 1)), help="onnxruntime intra-op threads")
    p.add_argument("--rounds", type=int, default=int(env("rounds", 7)), help="timed rounds per measurement")
    p.add_argument("--cv-target", type=float, default=float(env("cv_target", 0.03)))
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], None]:
    protocol = LatencyProtocol(intra_op_threads=args.threads, rounds=args.rounds, cv_target=args.cv_target)
    servicer = EvaluatorServicer(CpuLatencyBackend(protocol), SERVICE)
    return [(common_pb2_grpc.add_EvaluatorServicer_to_server, servicer, EVALUATOR)], None


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
