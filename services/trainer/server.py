"""Trainer service: config and wiring (the logic lives in ``facenas.workers.trainer``).

``--backend torch`` (the default) trains; ``--backend sim`` serves simulated IOUs (see
:mod:`facenas.workers.sim`) without a dataset or torch, and no FullTrain (its Trainer service is not
registered: UNIMPLEMENTED).

Health: NOT_SERVING while the dataset directory (or an explicit ``--data-cache`` directory) is missing or
unreadable; SubmitJob and FullTrain are UNAVAILABLE meanwhile.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from facenas.probes import data_cache_probe, dataset_probe
from facenas.rpc.app import (
    EVALUATOR,
    add_dataset_dir,
    add_job_flags,
    add_split_flags,
    base_parser,
    job_servicer,
    run,
)
from facenas.rpc.flags import ServiceParser, env, number
from facenas.rpc.health import Probe
from facenas.rpc.server import Registration
from facenas.sim.flags import SIM_HELP, add_sim_flags, sim_backend

SERVICE = "trainer"
TRAINER = "facenas.v1.Trainer"
#: gRPC services this server registers (and reports in gRPC health)
GRPC_SERVICES = (EVALUATOR, TRAINER)
BACKENDS = ("torch", "sim")


def parser() -> ServiceParser:
    p = base_parser(SERVICE, 50061)
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=env("backend", "torch"),
        help=f"torch: partial and final training on --device; {SIM_HELP}",
    )
    add_dataset_dir(p, "Face Synthetics-layout directory partial and final training read", needed=_real)
    p.add_argument(
        "--device",
        default=env("device", "auto"),
        help="auto (every GPU, else the CPU), cpu, cuda (every GPU) or cuda:N[,cuda:M...]",
    )
    p.add_argument(
        "--capacity",
        type=number(int, 1, 64),
        default=env("capacity", 1),
        help="concurrent trainings per device (Archai runs 2 per GPU); with --backend sim, in all",
    )
    p.add_argument(
        "--threads",
        type=number(int, 0, 1024),
        default=env("threads", 0),
        help="torch CPU threads (0 = torch's default)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=env("output_dir", Path("trainer-output")),
        help="where final trainings write checkpoints, model.onnx and metrics.json",
    )
    add_split_flags(p)
    p.add_argument(
        "--loader-workers",
        type=number(int, -1, 64),
        default=env("loader_workers", -1),
        help="DataLoader worker processes per training (-1: none on CPU, a few on CUDA)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default=env("precision", "auto"),
        help="auto: fp32 on CPU, bf16 AMP on CUDA where supported (else fp16)",
    )
    add_sim_flags(p)
    add_job_flags(p)
    return p


def _real(args: argparse.Namespace) -> bool:
    return bool(args.backend != "sim")


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], Callable[[], None], Sequence[Probe]]:
    if args.backend == "sim":
        backend = sim_backend(SERVICE, args, args.capacity)
        evaluator, stop_jobs = job_servicer(backend, SERVICE, ["cpu"] * args.capacity, args)
        return [evaluator], stop_jobs, []
    return _build_torch(args)


def _build_torch(
    args: argparse.Namespace,
) -> tuple[Sequence[Registration], Callable[[], None], Sequence[Probe]]:
    from facenas.rpc.trainer import TrainerServicer  # torch: not imported by --backend sim
    from facenas.v1 import trainer_pb2_grpc
    from facenas.workers.trainer import TrainerBackend

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    backend = TrainerBackend(
        args.dataset_dir,
        args.device,
        args.val_fraction,
        args.test_fraction,
        args.capacity,
        args.data_cache,
        args.loader_workers,
        args.precision,
    )
    slots = [device for device in backend.devices for _ in range(args.capacity)]
    evaluator, stop_jobs = job_servicer(backend, SERVICE, slots, args)
    trainer = TrainerServicer(backend, args.output_dir.resolve())
    guards = [f"{EVALUATOR}/SubmitJob", TRAINER]  # new work needs the data; following a job does not
    probes = [dataset_probe(args.dataset_dir, guards), data_cache_probe(args.data_cache, guards)]
    registrations = [evaluator, (trainer_pb2_grpc.add_TrainerServicer_to_server, trainer, TRAINER)]
    return registrations, stop_jobs, [p for p in probes if p is not None]


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
