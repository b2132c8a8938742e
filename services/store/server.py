"""Store service: config and wiring (the logic lives in ``facenas.store``).

Health: NOT_SERVING while the database does not answer (SQLite: the file or its directory gone or not
writable; PostgreSQL: ``SELECT 1`` fails); every Store call is UNAVAILABLE meanwhile.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from facenas.limits import return_freed_memory
from facenas.probes import database_probe
from facenas.rpc.app import base_parser, run
from facenas.rpc.flags import ServiceParser, env
from facenas.rpc.health import Probe
from facenas.rpc.server import Registration
from facenas.store import open_store
from facenas.store.grpc_servicer import StoreServicer
from facenas.v1 import store_pb2_grpc

SERVICE = "store"
STORE = "facenas.v1.Store"
#: gRPC services this server registers (and reports in gRPC health)
GRPC_SERVICES = (STORE,)


def parser() -> ServiceParser:
    p = base_parser(SERVICE, 50060)
    p.add_argument(
        "--url",
        default=env("store_url", "sqlite:///facenas.db"),
        help="sqlite:///PATH (embedded default) or postgresql://USER@HOST:PORT/DB (FACENAS_STORE_URL)",
    )
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], Callable[[], None], Sequence[Probe]]:
    return_freed_memory()  # requests up to the message limit must not grow the process for good
    store = open_store(args.url)
    probes = [database_probe(args.url, [STORE])]
    return [(store_pb2_grpc.add_StoreServicer_to_server, StoreServicer(store), STORE)], store.close, probes


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
