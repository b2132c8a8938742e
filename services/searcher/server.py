"""Searcher service: config and wiring (the logic lives in ``facenas.search``).

Health: NOT_SERVING while the store does not answer its own health SERVING within 2 s (unreachable, or
its database is down). Searcher calls are not refused meanwhile: they report what the store says.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from facenas.cluster.autoscale import (
    AutoscalePolicy,
    ScaleApi,
    TrainerAutoscaler,
    in_cluster_api,
    parse_range,
)
from facenas.errors import ConfigError
from facenas.limits import return_freed_memory
from facenas.probes import remote_health_probe
from facenas.rpc.app import base_parser, run
from facenas.rpc.client import make_channel
from facenas.rpc.flags import ServiceParser, env, env_switch, number
from facenas.rpc.health import Probe
from facenas.rpc.security import add_token_flags
from facenas.rpc.server import Registration
from facenas.search.dispatch import FollowPolicy, ReplicaPool
from facenas.search.manager import SearchManager
from facenas.search.outages import DEFAULT_PATIENCE_S, OutagePolicy
from facenas.store.grpc_client import GrpcStore
from facenas.v1 import searcher_pb2_grpc
from services.searcher.servicer import SearcherServicer

SERVICE = "searcher"
SEARCHER = "facenas.v1.Searcher"
#: gRPC services this server registers (and reports in gRPC health)
GRPC_SERVICES = (SEARCHER,)


def _addresses(text: str | None) -> list[str]:
    return [a.strip() for a in (text or "").split(",") if a.strip()]


def parser() -> ServiceParser:
    p = base_parser(SERVICE, 50051)
    p.add_argument(
        "--store",
        default=env("store", "127.0.0.1:50060"),
        help="store service address: host:port, or dns:///NAME:PORT (resolved again when it stops answering)",
    )
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
        "--job-heartbeat-s",
        type=number(float, 0.05, 60),
        default=env("job_heartbeat_s", 10.0),
        help="workers re-send a job's state at least this often",
    )
    p.add_argument(
        "--job-silence-s",
        type=number(float, above=0),
        default=env("job_silence_s", 30.0),
        help="a job stream silent this long is re-opened",
    )
    p.add_argument(
        "--reattach-s",
        type=number(float, 0),
        default=env("reattach_s", 20.0),
        help="a replica unreachable this long loses its jobs to other replicas",
    )
    p.add_argument(
        "--store-patience-s",
        type=number(float, 0),
        default=env("store_patience_s", DEFAULT_PATIENCE_S),
        help="searches wait this long for an unreachable store before failing (they pause meanwhile)",
    )
    p.add_argument(
        "--auto-resume",
        action="store_true",
        default=env_switch("auto_resume"),
        help="resume searches the store says are running when the searcher starts",
    )
    add_token_flags(p)
    p.add_check(_follow_problems, "job_heartbeat_s", "job_silence_s")
    p.add_check(_autoscale_problems)
    return p


def build(args: argparse.Namespace) -> tuple[Sequence[Registration], Callable[[], None], Sequence[Probe]]:
    return_freed_memory()  # requests up to the message limit must not grow the process for good
    # --autoscale-trainers needs the cluster API: outside a pod, fail (saying so) before starting anything
    scale_api = in_cluster_api() if args.autoscale_trainers else None
    policy = _follow_policy(args)
    store = GrpcStore(args.store)
    store_health = make_channel(args.store)
    pools = {
        service: ReplicaPool(service, addresses, policy)
        for service, addresses in (
            ("trainer", _addresses(args.trainer)),
            ("latency_cpu", _addresses(args.latency_cpu)),
            ("latency_snp", _addresses(args.latency_snp)),
        )
        if addresses
    }
    patience = OutagePolicy(patience_s=args.store_patience_s)
    # each replica pool is the gRPC Evaluator of its service
    manager = SearchManager(store, pools, patience=patience)
    if args.auto_resume:
        manager.resume_interrupted_in_background()
    autoscaler = _autoscaler(args, pools.get("trainer"), scale_api)

    def on_stop() -> None:
        if autoscaler is not None:
            autoscaler.stop()
        manager.shutdown()
        for pool in pools.values():
            pool.close()
        store.close()
        store_health.close()

    registration = (searcher_pb2_grpc.add_SearcherServicer_to_server, SearcherServicer(manager), SEARCHER)
    return [registration], on_stop, [remote_health_probe("store", args.store, store_health)]


def _follow_problems(args: argparse.Namespace) -> list[str]:
    if not args.job_silence_s > args.job_heartbeat_s:
        return [
            f"--job-silence-s: {args.job_silence_s} must exceed --job-heartbeat-s ({args.job_heartbeat_s})"
        ]
    return []


def _follow_policy(args: argparse.Namespace) -> FollowPolicy:
    return FollowPolicy(args.job_heartbeat_s, args.job_silence_s, args.reattach_s)


def _autoscale_problems(args: argparse.Namespace) -> list[str]:
    if not args.autoscale_trainers:
        return []
    problems = [] if _addresses(args.trainer) else ["--autoscale-trainers needs --trainer"]
    try:
        _autoscale_policy(args)
    except ConfigError as err:
        problems += err.problems
    return problems


def _autoscale_policy(args: argparse.Namespace) -> AutoscalePolicy:
    lo, hi = parse_range(args.autoscale_trainers)
    return AutoscalePolicy(args.trainer_deployment, args.namespace, lo, hi)


def _autoscaler(
    args: argparse.Namespace, trainers: ReplicaPool | None, api: ScaleApi | None
) -> TrainerAutoscaler | None:
    if api is None or trainers is None:  # (--trainer is checked with the flags)
        return None
    policy = _autoscale_policy(args)
    autoscaler = TrainerAutoscaler(api, policy, trainers.replicas_wanted)
    autoscaler.start()
    return autoscaler


def main(argv: Sequence[str] | None = None) -> int:
    return run(SERVICE, parser(), build, argv, guarded=GRPC_SERVICES)
