"""latency_cpu service: config and wiring (the logic lives in ``facenas.workers.cpu_latency``).

``--backend onnxruntime`` (the default) measures on this host; ``--backend sim`` serves simulated
latencies (see :mod:`facenas.workers.sim`) without onnxruntime or torch.

Health: NOT_SERVING while onnxruntime cannot create and run a session; SubmitJob is UNAVAILABLE meanwhile.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from facenas.probes import onnxruntime_probe
from facenas.rpc.app import (
    EVALUATOR,
    add_job_flags,
    add_stability_flags,
    base_parser,
    job_servicer,
    latency_protocol,
    run,
)
from facenas.rpc.flags import ServiceParser, env, number
from facenas.rpc.health import Probe
from facenas.rpc.server import Registration
from facenas.sim.flags import SIM_HELP, add_sim_flags, sim_backend

SERVICE = "latency_cpu"
#: gRPC services this server registers (and reports in gRPC health)
GRPC_SERVICES = (EVALUATOR,)
BACKENDS = ("onnxruntime", "sim")


def parser() -> ServiceParser:
    p = base_parser(SERVICE, 50062)
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=env("backend", "onnxruntime"),
        help=f"onnxruntime: CPU latency measured on this host; {SIM_HELP}",
    )
    p.add_argument(
        "--threads", type=number(int, 1, 1024), default=env("threads", 1), help="onnxruntime intra-op threads"
    )
    p.add_argument(
        "--rounds", type=number(int, 2, 1000), default=env("rounds", 7), help="timed rounds per measurement"
    )
    add_stability_flags(p)
    add_sim_flags(p)
    add_job_flags(p)
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], Callable[[], None], Sequence[Probe]]:
    if args.backend == "sim":  # one slot, as measurements: simulated ones take as long, one at a time
        evaluator, stop_jobs = job_servicer(sim_backend(SERVICE, args), SERVICE, ["cpu"], args)
        return [evaluator], stop_jobs, []
    from facenas.workers.cpu_latency import CpuLatencyBackend  # onnxruntime, torch: not for --backend sim

    protocol = latency_protocol(args)
    # one slot: measurements on one host never overlap each other
    evaluator, stop_jobs = job_servicer(CpuLatencyBackend(protocol), SERVICE, ["cpu"], args)
    return [evaluator], stop_jobs, [onnxruntime_probe([f"{EVALUATOR}/SubmitJob"])]


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
