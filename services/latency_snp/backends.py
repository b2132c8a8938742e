"""latency_snp's backends and the flags choosing one: SNPE on attached boards, AI Hub, or the emulation.

``--backend auto`` (the default) takes SNPE when its tools are installed and adb lists at least one
board, else the emulation, and logs why; the emulation's results are labelled ``emulated`` everywhere.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

from facenas.errors import ConfigError, InvalidInput, MeasurementError, Unavailable
from facenas.latency import LatencyProtocol
from facenas.rpc.app import env
from facenas.snp.adb import Adb
from facenas.snp.boards import BoardPool
from facenas.snp.profiler import PERF_PROFILES, RUNTIMES, ProfilePlan
from facenas.snp.sdk import SnpeSdk
from facenas.workers.base import EvaluationBackend
from facenas.workers.snp_emulation import SnpEmulationBackend

log = logging.getLogger(__name__)

BACKENDS = ("auto", "emulation", "snpe", "aihub")


def add_backend_flags(p: argparse.ArgumentParser) -> None:
    """Flags of every backend (each also read from ``FACENAS_<FLAG>``)."""
    p.add_argument("--backend", choices=BACKENDS, default=env("backend", "auto"))
    p.add_argument("--calibration-images", type=int, default=int(env("calibration_images", 16)))
    emulation = p.add_argument_group("emulation (int8 onnxruntime QDQ on this host)")
    emulation.add_argument(
        "--threads",
        type=int,
        default=int(env("threads", 1)),
        help="onnxruntime intra-op threads; also torch's threads when training for the quantized IOU",
    )
    emulation.add_argument("--rounds", type=int, default=int(env("rounds", 7)))
    emulation.add_argument(
        "--val-fraction",
        type=float,
        default=float(env("val_fraction", 0.02)),
        help="validation split of the quantized IOU objective (as the trainers')",
    )
    emulation.add_argument("--test-fraction", type=float, default=float(env("test_fraction", 0.10)))
    snpe = p.add_argument_group("snpe (Snapdragon boards over adb)")
    snpe.add_argument(
        "--snpe-root", type=Path, default=env("snpe_root", os.environ.get("SNPE_ROOT")), help="SNPE SDK root"
    )
    snpe.add_argument("--adb", default=env("adb", "adb"), help="adb executable")
    snpe.add_argument("--soc", default=env("soc", None), help="only boards with this SoC, e.g. SM8350")
    snpe.add_argument("--serials", default=env("serials", ""), help="only these boards (comma-separated)")
    snpe.add_argument("--runtime", choices=tuple(RUNTIMES), default=env("runtime", "dsp"))
    snpe.add_argument(
        "--perf-profile", choices=PERF_PROFILES, default=env("perf_profile", "high_performance")
    )
    snpe.add_argument("--snpe-runs", type=int, default=int(env("snpe_runs", 5)), help="runs per round")
    snpe.add_argument("--snpe-max-rounds", type=int, default=int(env("snpe_max_rounds", 3)))
    snpe.add_argument("--snpe-max-cv", type=float, default=float(env("snpe_max_cv", 0.10)), help="stdev/mean")
    snpe.add_argument("--profile-images", type=int, default=int(env("profile_images", 4)))
    snpe.add_argument("--hexagon-arch", default=env("hexagon_arch", None), help="e.g. v68 (default: by SoC)")
    snpe.add_argument("--adb-timeout", type=float, default=float(env("adb_timeout", 60.0)), help="seconds")
    hub = p.add_argument_group("aihub (Qualcomm AI Hub hosted devices)")
    hub.add_argument("--aihub-python", default=env("aihub_python", None), help="python of the qai-hub venv")
    hub.add_argument("--aihub-device", default=env("aihub_device", None), help='e.g. "Samsung Galaxy S23"')
    hub.add_argument("--aihub-timeout", type=float, default=float(env("aihub_timeout", 3600.0)))


def build_backend(args: argparse.Namespace) -> EvaluationBackend:
    """The backend ``args`` ask for; ConfigError/InvalidInput with what to fix when it cannot start."""
    if args.calibration_images < 1:
        raise ConfigError([f"--calibration-images: {args.calibration_images} must be >= 1"])
    choice = args.backend
    if choice == "auto":
        choice, reason = _auto(args)
        log.info("backend chosen", extra={"backend": choice, "reason": reason})
    if choice == "snpe":
        return _snpe(args)
    if choice == "aihub":
        return _aihub(args)
    return _emulation(args)


def _emulation(args: argparse.Namespace) -> EvaluationBackend:
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)  # no spare OpenMP threads spinning while a model is timed
    protocol = LatencyProtocol(intra_op_threads=args.threads, rounds=args.rounds)
    return SnpEmulationBackend(
        args.dataset_dir, protocol, args.calibration_images, args.val_fraction, args.test_fraction
    )


def _snpe(args: argparse.Namespace) -> EvaluationBackend:
    from facenas.workers.snpe import SnpeBackend

    if args.snpe_root is None:
        raise ConfigError(["--snpe-root (or SNPE_ROOT): the SNPE SDK directory is needed by --backend snpe"])
    plan = ProfilePlan(
        args.runtime, args.snpe_runs, args.snpe_max_rounds, args.snpe_max_cv, args.perf_profile
    )
    sdk = SnpeSdk(Path(args.snpe_root))
    sdk.check(graph_prepare=plan.runtime == "htp")
    if shutil.which(args.adb) is None:
        raise ConfigError(
            [f"--adb: {args.adb!r} not found; install Android platform-tools or pass --adb PATH"]
        )
    serials = tuple(s.strip() for s in args.serials.split(",") if s.strip())
    pool = BoardPool(Adb(args.adb, args.adb_timeout), args.soc, serials)
    boards = pool.discover()
    log.info(
        "snpe backend",
        extra={"sdk": sdk.version, "boards": [b.describe() for b in boards], "ignored": pool.ignored},
    )
    if not boards:
        log.warning("no board yet; requests fail with UNAVAILABLE until one is attached")
    return SnpeBackend(
        sdk, pool, args.dataset_dir, plan, args.calibration_images, args.profile_images, args.hexagon_arch
    )


def _aihub(args: argparse.Namespace) -> EvaluationBackend:
    from facenas.snp.aihub import AiHubBackend

    problems = [f"--{flag}: needed by --backend aihub" for flag in ("aihub-python", "aihub-device")
                if not getattr(args, flag.replace("-", "_"))]  # fmt: skip
    if problems:
        raise ConfigError(problems)
    backend = AiHubBackend(
        python=args.aihub_python,
        device=args.aihub_device,
        dataset_dir=args.dataset_dir,
        calibration_images=args.calibration_images,
        timeout_s=args.aihub_timeout,
    )
    backend.check()
    return backend


def _auto(args: argparse.Namespace) -> tuple[str, str]:
    """("snpe", why) when the SDK and a board are present, else ("emulation", why not)."""
    if args.snpe_root is None:
        return "emulation", "no SNPE SDK configured (--snpe-root / SNPE_ROOT)"
    try:
        SnpeSdk(Path(args.snpe_root)).tool("snpe-onnx-to-dlc")
        attached = [d for d in Adb(args.adb, args.adb_timeout).devices() if d.state == "device"]
    except (InvalidInput, Unavailable, MeasurementError) as err:
        return "emulation", str(err)
    if not attached:
        return "emulation", "adb lists no usable board"
    return "snpe", f"{len(attached)} board(s) attached"
