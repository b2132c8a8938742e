"""Store service: config and wiring (the logic lives in ``facenas.store``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from facenas.rpc.app import base_parser, env, run
from facenas.rpc.server import Registration
from facenas.store import open_store
from facenas.store.grpc_servicer import StoreServicer
from facenas.v1 import store_pb2_grpc

SERVICE = "store"
STORE = "facenas.v1.Store"


def parser() -> argparse.ArgumentParser:
    p = base_parser(SERVICE, 50060)
    p.add_argument(
        "--url",
        default=env("store_url", "sqlite:///facenas.db"),
        help="sqlite:///PATH (embedded default) or postgresql://USER@HOST:PORT/DB (FACENAS_STORE_URL)",
    )
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], Callable[[], None]]:
    store = open_store(args.url)
    return [(store_pb2_grpc.add_StoreServicer_to_server, StoreServicer(store), STORE)], store.close


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
