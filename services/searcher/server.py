"""Searcher service: config and wiring (the logic lives in ``facenas.search``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from facenas.cluster.autoscale import AutoscalePolicy, TrainerAutoscaler, in_cluster_api, parse_range
from facenas.errors import ConfigError
from facenas.rpc.app import base_parser, env, run
from facenas.rpc.server import Registration
from facenas.search.dispatch import ReplicaPool
from facenas.search.manager import SearchManager
from facenas.store.grpc_client import GrpcStore
from facenas.v1 import searcher_pb2_grpc
from services.searcher.servicer import SearcherServicer

SERVICE = "searcher"
SEARCHER = "facenas.v1.Searcher"


def _addresses(text: str | None) -> list[str]:
    return [a.strip() for a in (text or "").split(",") if a.strip()]


def parser() -> argparse.ArgumentParser:
    p = base_parser(SERVICE, 50051)
    p.add_argument("--store", default=env("store", "127.0.0.1:50060"), help="store service address")
    p.add_argument(
        "--trainer",
        default=env("trainer", ""),
        help="trainer replicas: host:port,... or dns:///NAME:PORT (every address NAME resolves to)",
    )
    p.add_argument("--latency-cpu", default=env("latency_cpu", ""), help="latency_cpu replica addresses")
    p.add_argument("--latency-snp", default=env("latency_snp", ""), help="latency_snp replica addresses")
    p.add_argument(
        "--autoscale-trainers",
        default=env("autoscale_trainers", ""),
        help="MIN:MAX: scale the trainer Deployment by pending work (in-cluster; needs the autoscale RBAC)",
    )
    p.add_argument("--trainer-deployment", default=env("trainer_deployment", "trainer"))
    p.add_argument("--namespace", default=env("namespace", "facenas"))
    p.add_argument(
        "--auto-resume",
        action="store_true",
        default=env("auto_resume", "") in ("1", "true", "yes"),
        help="resume searches the store says are running when the searcher starts",
    )
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], Callable[[], None]]:
    store = GrpcStore(args.store)
    pools = {
        service: ReplicaPool(service, addresses)
        for service, addresses in (
            ("trainer", _addresses(args.trainer)),
            ("latency_cpu", _addresses(args.latency_cpu)),
            ("latency_snp", _addresses(args.latency_snp)),
        )
        if addresses
    }
    manager = SearchManager(store, pools)
    if args.auto_resume:
        manager.resume_interrupted()
    autoscaler = _autoscaler(args, pools.get("trainer"))

    def on_stop() -> None:
        if autoscaler is not None:
            autoscaler.stop()
        manager.shutdown()
        for pool in pools.values():
            pool.close()
        store.close()

    return [(searcher_pb2_grpc.add_SearcherServicer_to_server, SearcherServicer(manager), SEARCHER)], on_stop


def _autoscaler(args: argparse.Namespace, trainers: ReplicaPool | None) -> TrainerAutoscaler | None:
    if not args.autoscale_trainers:
        return None
    if trainers is None:
        raise ConfigError(["--autoscale-trainers needs --trainer"])
    lo, hi = parse_range(args.autoscale_trainers)
    policy = AutoscalePolicy(args.trainer_deployment, args.namespace, lo, hi)
    autoscaler = TrainerAutoscaler(in_cluster_api(), policy, trainers.demand)
    autoscaler.start()
    return autoscaler


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv)
