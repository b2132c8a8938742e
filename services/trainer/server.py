"""Trainer service: config and wiring (the logic lives in ``facenas.workers.trainer``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from facenas.rpc.app import add_dataset_dir, base_parser, env, run
from facenas.rpc.evaluator import EvaluatorServicer
from facenas.rpc.server import Registration
from facenas.rpc.trainer import TrainerServicer
from facenas.v1 import common_pb2_grpc, trainer_pb2_grpc
from facenas.workers.trainer import TrainerBackend

SERVICE = "trainer"
EVALUATOR = "facenas.v1.Evaluator"
TRAINER = "facenas.v1.Trainer"


def parser() -> argparse.ArgumentParser:
    p = base_parser(SERVICE, 50061)
    add_dataset_dir(p, "Face Synthetics-layout directory partial and final training read")
    p.add_argument("--device", default=env("device", "auto"), help="auto, cpu, cuda or cuda:N")
    p.add_argument("--capacity", type=int, default=int(env("capacity", 1)), help="concurrent trainings")
    p.add_argument(
        "--threads", type=int, default=int(env("threads", 0)), help="torch CPU threads (0 = torch's default)"
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(env("output_dir", "trainer-output")),
        help="where final trainings write checkpoints, model.onnx and metrics.json",
    )
    p.add_argument("--val-fraction", type=float, default=float(env("val_fraction", 0.02)))
    p.add_argument("--test-fraction", type=float, default=float(env("test_fraction", 0.10)))
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], None]:
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    backend = TrainerBackend(
        args.dataset_dir, args.device, args.val_fraction, args.test_fraction, args.capacity
    )
    servicer = EvaluatorServicer(backend, SERVICE)
    trainer = TrainerServicer(backend, args.output_dir.resolve())
    return [
        (common_pb2_grpc.add_EvaluatorServicer_to_server, servicer, EVALUATOR),
        (trainer_pb2_grpc.add_TrainerServicer_to_server, trainer, TRAINER),
    ], None


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
