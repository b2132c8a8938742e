"""The flags of ``--backend sim`` every objective service shares, and the backend they configure."""

from __future__ import annotations

import argparse
import logging

from facenas.rpc.flags import FlagValueError, ServiceParser, env, number
from facenas.sim.delay import FORMS, Delay, DelayError, parse_delay
from facenas.workers.sim import SERVICE_OBJECTIVES, SimBackend

log = logging.getLogger(__name__)

SIM_HELP = (
    "sim: simulated values (an analytic cost model for latency, a learning curve for IOU) under target keys "
    "of their own (sim:...), labelled simulated; no dataset, torch or device needed -- for trying a "
    "search config or an algorithm in minutes, never for choosing a model"
)


def delay_flag(text: str) -> Delay:
    """``--sim-delay``'s type."""
    try:
        return parse_delay(text)
    except DelayError as err:
        raise FlagValueError(err.problem) from None


def add_sim_flags(parser: ServiceParser) -> None:
    """``--sim-delay`` and ``--sim-seed`` (each also from ``FACENAS_<FLAG>``), read by ``--backend sim``."""
    group = parser.add_argument_group("sim (--backend sim: simulated values, labelled simulated)")
    group.add_argument(
        "--sim-delay",
        type=delay_flag,
        default=env("sim_delay", "0"),
        help=f"how long each evaluation takes, in seconds: {FORMS}; a drawn delay is fixed per evaluation",
    )
    group.add_argument(
        "--sim-seed",
        type=number(int, 0, 2**31 - 1),
        default=env("sim_seed", 0),
        help="seeds the simulated values' noise and the delays (part of the target key)",
    )


def sim_backend(service: str, args: argparse.Namespace, capacity: int = 1) -> SimBackend:
    """``service``'s objectives, simulated as ``args`` say."""
    backend = SimBackend(SERVICE_OBJECTIVES[service], args.sim_delay, args.sim_seed, capacity)
    log.info(
        "simulation backend: values are simulated, not measured",
        extra={
            "objectives": list(backend.objectives),
            "delay": args.sim_delay.describe(),
            "seed": args.sim_seed,
        },
    )
    return backend
