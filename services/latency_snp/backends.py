"""latency_snp's backends and the flags choosing one: SNPE on attached boards, AI Hub, or the emulation.

``--backend auto`` (the default) takes SNPE when its tools are installed and adb lists at least one
board, else the emulation, and logs why; the emulation's results are labelled ``emulated`` everywhere.
``--backend sim`` serves simulated values (:mod:`facenas.workers.sim`), labelled ``simulated``, without a
dataset, onnxruntime or torch. :func:`backend_probes` says what each backend needs to be SERVING.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

from facenas.errors import ConfigError, InvalidInput, MeasurementError, Unavailable
from facenas.probes import boards_probe, data_cache_probe, dataset_probe, onnxruntime_probe
from facenas.rpc.app import add_split_flags, add_stability_flags, latency_protocol
from facenas.rpc.flags import ServiceParser, env, number
from facenas.rpc.health import Probe
from facenas.sim.flags import SIM_HELP, add_sim_flags, sim_backend
from facenas.snp.adb import Adb
from facenas.snp.boards import BoardPool
from facenas.snp.profiler import MIN_RUNS, PERF_PROFILES, RUNTIMES, ProfilePlan
from facenas.snp.sdk import SnpeSdk
from facenas.workers.base import EvaluationBackend
from facenas.workers.sim import SimBackend

log = logging.getLogger(__name__)

BACKENDS = ("auto", "emulation", "snpe", "aihub", "sim")


def add_backend_flags(p: ServiceParser) -> None:
    """Flags of every backend (each also read from ``FACENAS_<FLAG>``)."""
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=env("backend", "auto"),
        help="auto: snpe when its SDK and a board are found, else emulation (int8 on this host, labelled "
        f"emulated); aihub: Qualcomm AI Hub; {SIM_HELP}",
    )
    p.add_argument("--calibration-images", type=number(int, 1, 10_000), default=env("calibration_images", 16))
    emulation = p.add_argument_group("emulation (int8 onnxruntime QDQ on this host)")
    emulation.add_argument(
        "--threads",
        type=number(int, 1, 1024),
        default=env("threads", 1),
        help="onnxruntime intra-op threads; also torch's threads when training for the quantized IOU",
    )
    emulation.add_argument("--rounds", type=number(int, 2, 1000), default=env("rounds", 7))
    add_stability_flags(p)
    add_split_flags(p, emulation)
    add_sim_flags(p)
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
    snpe.add_argument(
        "--snpe-runs", type=number(int, MIN_RUNS), default=env("snpe_runs", 5), help="runs per round"
    )
    snpe.add_argument("--snpe-max-rounds", type=number(int, 1), default=env("snpe_max_rounds", 3))
    snpe.add_argument(
        "--snpe-max-cv",
        type=number(float, above=0),
        default=env("snpe_max_cv", 0.10),
        help="stdev/mean (< 1)",
    )
    snpe.add_argument("--profile-images", type=number(int, 1), default=env("profile_images", 4))
    snpe.add_argument("--hexagon-arch", default=env("hexagon_arch", None), help="e.g. v68 (default: by SoC)")
    snpe.add_argument(
        "--adb-timeout", type=number(float, above=0), default=env("adb_timeout", 60.0), help="seconds"
    )
    hub = p.add_argument_group("aihub (Qualcomm AI Hub hosted devices)")
    hub.add_argument("--aihub-python", default=env("aihub_python", None), help="python of the qai-hub venv")
    hub.add_argument("--aihub-device", default=env("aihub_device", None), help='e.g. "Samsung Galaxy S23"')
    hub.add_argument("--aihub-timeout", type=number(float, above=0), default=env("aihub_timeout", 3600.0))
    p.add_check(_backend_problems, "backend", "snpe_max_cv")


def _backend_problems(args: argparse.Namespace) -> list[str]:
    """What the chosen backend needs from the flags (what it needs from the host is checked at build)."""
    problems = []
    if args.snpe_max_cv >= 1:
        problems.append(f"--snpe-max-cv: {args.snpe_max_cv} must be < 1")
    if args.backend == "snpe" and args.snpe_root is None:
        problems.append("--snpe-root (or SNPE_ROOT): the SNPE SDK directory is needed by --backend snpe")
    if args.backend == "aihub":
        problems += [
            f"--{flag}: needed by --backend aihub"
            for flag in ("aihub-python", "aihub-device")
            if not getattr(args, flag.replace("-", "_"))
        ]
    return problems


def build_backend(args: argparse.Namespace) -> EvaluationBackend:
    """The backend ``args`` ask for; ConfigError/InvalidInput with what to fix when it cannot start."""
    choice = args.backend
    if choice == "sim":
        return sim_backend("latency_snp", args)
    if choice == "auto":
        choice, reason = _auto(args)
        log.info("backend chosen", extra={"backend": choice, "reason": reason})
    if choice == "snpe":
        return _snpe(args)
    if choice == "aihub":
        return _aihub(args)
    return _emulation(args)


def backend_probes(backend: EvaluationBackend, args: argparse.Namespace, guards: list[str]) -> list[Probe]:
    """What ``backend`` needs: the dataset (calibration images) always; SNPE an attached healthy board
    (discovered again on every check), the emulation a working onnxruntime; AI Hub nothing more here."""
    if isinstance(backend, SimBackend):
        return []  # it needs nothing
    from facenas.workers.snp_emulation import SnpEmulationBackend
    from facenas.workers.snpe import SnpeBackend

    probes = [dataset_probe(args.dataset_dir, guards), data_cache_probe(args.data_cache, guards)]
    if isinstance(backend, SnpeBackend):
        probes.append(boards_probe(backend.pool, guards, timeout_s=args.adb_timeout + 5.0))
    elif isinstance(backend, SnpEmulationBackend):
        probes.append(onnxruntime_probe(guards))
    return [p for p in probes if p is not None]


def _emulation(args: argparse.Namespace) -> EvaluationBackend:
    from facenas.workers.snp_emulation import SnpEmulationBackend  # onnxruntime, torch: not for sim

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)  # no spare OpenMP threads spinning while a model is timed
    protocol = latency_protocol(args)
    return SnpEmulationBackend(
        args.dataset_dir,
        protocol,
        args.calibration_images,
        args.val_fraction,
        args.test_fraction,
        data_cache=args.data_cache,
    )


def _snpe(args: argparse.Namespace) -> EvaluationBackend:
    from facenas.workers.snpe import SnpeBackend

    if args.snpe_root is None:  # (--backend snpe without it is refused with the flags)
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
        sdk,
        pool,
        args.dataset_dir,
        plan,
        args.calibration_images,
        args.profile_images,
        args.hexagon_arch,
        data_cache=args.data_cache,
    )


def _aihub(args: argparse.Namespace) -> EvaluationBackend:
    from facenas.snp.aihub import AiHubBackend

    problems = _backend_problems(args)  # (refused with the flags already)
    if problems:
        raise ConfigError(problems)
    backend = AiHubBackend(
        python=args.aihub_python,
        device=args.aihub_device,
        dataset_dir=args.dataset_dir,
        calibration_images=args.calibration_images,
        timeout_s=args.aihub_timeout,
        data_cache=args.data_cache,
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
