"""The entry point every service shares: flags and environment, logging, serve, drain on SIGTERM.

Each flag also reads ``FACENAS_<FLAG>`` from the environment (``--metrics-port`` <- ``FACENAS_METRICS_PORT``);
flags win. Bad values, from either, are reported all at once before anything starts, with exit status 2
(see :mod:`facenas.rpc.flags`). A service's ``build`` also returns the probes of the dependencies it
needs; a :class:`~facenas.rpc.health.HealthMonitor` runs them every ``--health-interval-s`` seconds and
keeps gRPC health true. Every service also takes the security flags of :mod:`facenas.rpc.security`
(``--tls-*``, ``--[no-]reflection``; the searcher ``--api-token``).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from facenas.errors import ConfigError, FacenasError
from facenas.jobs import JobManager
from facenas.logs import configure_logging
from facenas.rpc import security
from facenas.rpc.evaluator import EvaluatorServicer
from facenas.rpc.flags import ServiceParser, env, log_level, number
from facenas.rpc.health import DEFAULT_INTERVAL_S, HealthMonitor, Probe
from facenas.rpc.server import Registration, ServerConfig, serve_until_signalled, start
from facenas.v1 import common_pb2_grpc
from facenas.workers.base import EvaluationBackend

if TYPE_CHECKING:
    from facenas.latency.cpu import LatencyProtocol

log = logging.getLogger(__name__)

EVALUATOR = "facenas.v1.Evaluator"
#: build(args) -> (registrations, stop hook, probes of the dependencies the service needs)
Builder = Callable[
    [argparse.Namespace], tuple[Sequence[Registration], Callable[[], None] | None, Sequence[Probe]]
]


def base_parser(service: str, default_port: int) -> ServiceParser:
    parser = ServiceParser(prog=f"python -m services.{service}", description=f"facenas {service} service")
    parser.add_argument("--host", default=env("host", "127.0.0.1"), help="listen address (0.0.0.0 in a pod)")
    port = number(int, 0, 65535)
    parser.add_argument("--port", type=port, default=env("port", default_port), help="gRPC port (0 = free)")
    parser.add_argument("--metrics-port", type=port, default=env("metrics_port", 0), help="/metrics port")
    parser.add_argument(
        "--grace", type=number(float, 0), default=env("grace", 30.0), help="SIGTERM drain seconds"
    )
    parser.add_argument(
        "--max-workers", type=number(int, 1, 10_000), default=env("max_workers", 32), help="gRPC threads"
    )
    parser.add_argument("--log-level", type=log_level, default=env("log_level", "INFO"))
    parser.add_argument(
        "--ready-file", type=Path, default=env("ready_file", None), help="write ports as JSON"
    )
    parser.add_argument(
        "--health-interval-s",
        type=number(float, above=0),
        default=env("health_interval_s", DEFAULT_INTERVAL_S),
        help="check the dependencies (database, boards, dataset...) this often; gRPC health follows",
    )
    security.add_tls_flags(parser)
    security.add_reflection_flag(parser)
    return parser


def add_job_flags(parser: ServiceParser) -> None:
    """How long a worker keeps finished jobs (a restarted searcher collects them) and its queue bound."""
    parser.add_argument(
        "--job-retention-s",
        type=number(float, above=0),
        default=env("job_retention_s", 24 * 3600.0),
        help="keep finished jobs' results this long (seconds)",
    )
    parser.add_argument(
        "--max-queued-jobs",
        type=number(int, 1),
        default=env("max_queued_jobs", 1024),
        help="queued jobs at most",
    )


def job_servicer(
    backend: EvaluationBackend, service: str, slots: Sequence[str], args: argparse.Namespace
) -> tuple[Registration, Callable[[], None]]:
    """The Evaluator registration of ``backend`` run as jobs on ``slots``, and the stop hook that fails
    its unfinished jobs as UNAVAILABLE (so that searchers move them at once) before the server drains."""
    manager = JobManager(
        backend, service, slots, retention_s=args.job_retention_s, max_queued=args.max_queued_jobs
    )
    registration = (common_pb2_grpc.add_EvaluatorServicer_to_server, EvaluatorServicer(manager), EVALUATOR)
    return registration, manager.close


def add_stability_flags(parser: ServiceParser) -> None:
    """When a CPU latency is re-attempted (``--cv-target``) and when it is refused as unstable."""
    parser.add_argument(
        "--cv-target", type=number(float, 0), default=env("cv_target", 0.03), help="re-attempt above this CV"
    )
    parser.add_argument(
        "--max-cv", type=number(float, 0), default=env("max_cv", 0.20), help="refuse a result above this CV"
    )
    parser.add_argument(
        "--min-cpu-fraction",
        type=number(float, 0, 1),
        default=env("min_cpu_fraction", 0.90),
        help="refuse a result whose measuring thread got less of its core (a busy host)",
    )

    def ordered(args: argparse.Namespace) -> list[str]:
        if args.max_cv < args.cv_target:
            return [f"--max-cv: {args.max_cv} must be >= --cv-target ({args.cv_target})"]
        return []

    parser.add_check(ordered, "max_cv", "cv_target")


def add_split_flags(parser: ServiceParser, group: argparse._ArgumentGroup | None = None) -> None:
    """``--val-fraction`` and ``--test-fraction`` (in ``group`` if given): the dataset split every trainer
    shares (Archai's 2 % and 10 %)."""
    fraction = number(float, 0, 0.99)
    adder = group or parser
    adder.add_argument(
        "--val-fraction",
        type=fraction,
        default=env("val_fraction", 0.02),
        help="validation split of the dataset (as every trainer's)",
    )
    adder.add_argument("--test-fraction", type=fraction, default=env("test_fraction", 0.10))

    def disjoint(args: argparse.Namespace) -> list[str]:
        if args.val_fraction + args.test_fraction >= 1:
            return [f"--val-fraction + --test-fraction: {args.val_fraction + args.test_fraction} must be < 1"]
        return []

    parser.add_check(disjoint, "val_fraction", "test_fraction")


def latency_protocol(args: argparse.Namespace) -> LatencyProtocol:
    """The CPU latency protocol of ``--threads``, ``--rounds`` and :func:`add_stability_flags`'s flags."""
    from facenas.latency.cpu import LatencyProtocol  # onnxruntime: only the latency services need it

    return LatencyProtocol(
        intra_op_threads=args.threads,
        rounds=args.rounds,
        cv_target=args.cv_target,
        max_cv=args.max_cv,
        min_cpu_fraction=args.min_cpu_fraction,
    )


def add_dataset_dir(
    parser: ServiceParser, help: str, needed: Callable[[argparse.Namespace], bool] | None = None
) -> None:
    """``--dataset-dir`` (``FACENAS_DATASET_DIR``), required (where ``needed(args)``, e.g. by every
    backend but ``sim``), and ``--data-cache``: where the decoded cache of it is read from."""
    when = "" if needed is None else " except by --backend sim"
    parser.add_argument(
        "--dataset-dir", type=Path, default=env("dataset_dir", None), help=f"{help} (required{when})"
    )

    def given(args: argparse.Namespace) -> list[str]:
        if args.dataset_dir or (needed is not None and not needed(args)):
            return []
        return [f"--dataset-dir (or FACENAS_DATASET_DIR): required{when}"]

    parser.add_check(given, "backend")
    parser.add_argument(
        "--data-cache",
        default=env("data_cache", "auto"),
        help="auto (DATASET_DIR/.facenas-cache/WxH when prepared, else the PNGs, with a warning), none "
        "(the PNGs), or a directory of caches by size (DIR/WxH, from `facenas data prepare --out`)",
    )


def run(
    service: str,
    parser: ServiceParser,
    build: Builder,
    argv: Sequence[str] | None = None,
    guarded: Sequence[str] = (),
) -> int:
    """Parse, build the servicers, serve until SIGTERM, drain, return the exit status.

    ``guarded``: the gRPC services that require the API token when one is configured (the parser then
    has :func:`security.add_token_flags`). The TLS flags also configure every channel ``build`` opens.
    Bad flags or ``FACENAS_*`` values: every problem on stderr, exit status 2, nothing started.
    """
    try:
        args, problems = parser.parse(argv)
    except ConfigError as err:  # a usage error argparse cannot parse past (a flag without its value)
        return _cannot_start(service, err)
    try:
        secure = security.server_security(args, guarded)
    except ConfigError as err:
        problems += err.problems
    if problems:
        return _cannot_start(service, ConfigError(problems))
    configure_logging(args.log_level)
    try:
        security.use_client_tls(secure.tls)  # the channels build() opens (searcher -> store, workers)
        log.info("security", extra={"service": service, **secure.describe()})
        if secure.token and secure.tls is None:
            log.warning(
                "the API token travels in plaintext without mTLS (--tls-*)", extra={"service": service}
            )
        registrations, on_stop, probes = build(args)
        monitor = HealthMonitor(probes, args.health_interval_s)
        monitor.check_now()  # the truth before the first health answer
        config = ServerConfig(
            args.host,
            args.port,
            args.metrics_port,
            args.max_workers,
            args.grace,
            tls=secure.tls,
            reflection=secure.reflection,
            interceptors=secure.interceptors,
        )
        running = start(monitor.guard(registrations), config)
        monitor.start(running)
        # what start-up loaded (torch, archai, the servicers) stays for good: out of the collector's way,
        # so a full collection walks only what the service made since (not hundreds of MB of modules)
        gc.freeze()
    except FacenasError as err:
        log.error("cannot start", extra={"service": service, "error": str(err)})
        return _cannot_start(service, err)
    if args.ready_file:
        tmp = Path(f"{args.ready_file}.tmp")
        tmp.write_text(
            json.dumps({"port": running.port, "metrics_port": running.metrics_port, "pid": os.getpid()})
        )
        tmp.replace(args.ready_file)
    log.info("ready", extra={"service": service, "port": running.port, "metrics_port": running.metrics_port})

    def stop() -> None:
        monitor.stop()  # before the drain, which sets NOT_SERVING for good
        if on_stop is not None:
            on_stop()

    serve_until_signalled(running, args.grace, stop)
    return 0


def _cannot_start(service: str, err: FacenasError) -> int:
    """Say why on stderr (every problem, and where the flags are listed); the exit status 2 of argparse."""
    hint = f"(python -m services.{service} --help lists the flags; each also reads FACENAS_<FLAG>)"
    sys.stderr.write(f"{service}: {err}\n{hint}\n")
    return 2
