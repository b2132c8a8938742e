"""The entry point every service shares: flags and environment, logging, serve, drain on SIGTERM.

Each flag also reads ``FACENAS_<FLAG>`` from the environment (``--metrics-port`` <- ``FACENAS_METRICS_PORT``);
flags win. Bad values are reported all at once before anything starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from facenas.errors import ConfigError, FacenasError
from facenas.logs import configure_logging
from facenas.rpc.server import Registration, ServerConfig, serve_until_signalled, start

log = logging.getLogger(__name__)

Builder = Callable[[argparse.Namespace], tuple[Sequence[Registration], Callable[[], None] | None]]


def env(name: str, default: Any) -> Any:
    """``FACENAS_<NAME>`` if set, else ``default``."""
    return os.environ.get(f"FACENAS_{name.upper().replace('-', '_')}", default)


def base_parser(service: str, default_port: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{service}", description=f"facenas {service} service"
    )
    parser.add_argument("--host", default=env("host", "127.0.0.1"), help="listen address (0.0.0.0 in a pod)")
    parser.add_argument(
        "--port", type=int, default=int(env("port", default_port)), help="gRPC port (0 = free)"
    )
    parser.add_argument("--metrics-port", type=int, default=int(env("metrics_port", 0)), help="/metrics port")
    parser.add_argument(
        "--grace", type=float, default=float(env("grace", 30.0)), help="SIGTERM drain seconds"
    )
    parser.add_argument("--max-workers", type=int, default=int(env("max_workers", 16)), help="gRPC threads")
    parser.add_argument("--log-level", default=env("log_level", "INFO"))
    parser.add_argument(
        "--ready-file", type=Path, default=env("ready_file", None), help="write ports as JSON"
    )
    return parser


def add_dataset_dir(parser: argparse.ArgumentParser, help: str) -> None:
    """``--dataset-dir`` (``FACENAS_DATASET_DIR``), required unless the environment sets it."""
    default = env("dataset_dir", None)
    parser.add_argument("--dataset-dir", type=Path, default=default, required=default is None, help=help)


def run(
    service: str, parser: argparse.ArgumentParser, build: Builder, argv: Sequence[str] | None = None
) -> int:
    """Parse, build the servicers, serve until SIGTERM, drain, return the exit status."""
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    problems = []
    if not 0 <= args.port <= 65535:
        problems.append(f"--port: {args.port} must be in [0, 65535]")
    if not 0 <= args.metrics_port <= 65535:
        problems.append(f"--metrics-port: {args.metrics_port} must be in [0, 65535]")
    if args.grace < 0:
        problems.append(f"--grace: {args.grace} must be >= 0")
    try:
        if problems:
            raise ConfigError(problems)
        registrations, on_stop = build(args)
        config = ServerConfig(args.host, args.port, args.metrics_port, args.max_workers, args.grace)
        running = start(registrations, config)
    except FacenasError as err:
        log.error("cannot start", extra={"service": service, "error": str(err)})
        sys.stderr.write(f"{service}: {err}\n")
        return 2
    if args.ready_file:
        tmp = Path(f"{args.ready_file}.tmp")
        tmp.write_text(
            json.dumps({"port": running.port, "metrics_port": running.metrics_port, "pid": os.getpid()})
        )
        tmp.replace(args.ready_file)
    log.info("ready", extra={"service": service, "port": running.port, "metrics_port": running.metrics_port})
    serve_until_signalled(running, args.grace, on_stop)
    return 0
