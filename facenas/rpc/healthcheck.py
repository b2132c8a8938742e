"""``python -m facenas.rpc.healthcheck``: ask a server's gRPC health, over mTLS when it is on.

The kubelet's native gRPC probe speaks plaintext only, so with mTLS on (``deploy/k8s/components/tls``)
the pods probe with this command instead. Exit status 0 when the service is SERVING, 1 otherwise (the
reason on stderr). TLS comes from ``--tls-*`` / ``FACENAS_TLS_*``, as for the services.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facenas.errors import ConfigError
from facenas.rpc import security
from facenas.rpc.client import make_channel
from facenas.rpc.flags import ServiceParser, env, number


def parser() -> ServiceParser:
    p = ServiceParser(prog="python -m facenas.rpc.healthcheck", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="server address (default: this host)")
    p.add_argument("--port", type=number(int, 1, 65535), default=env("port", None), help="(FACENAS_PORT)")
    p.add_argument("--service", default="", help="service name ('' = the server as a whole)")
    p.add_argument("--timeout", type=number(float, above=0), default=3.0, help="seconds")
    p.add_check(lambda args: [] if args.port else ["--port (or FACENAS_PORT): required"], "port")
    security.add_tls_flags(p)
    return p


def check(address: str, service: str, timeout: float, tls: security.TlsConfig | None) -> str:
    """The health status name of ``service`` at ``address`` (raises ``grpc.RpcError`` when unreachable)."""
    with make_channel(address, tls=tls) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, problems = parser().parse(argv)
    except ConfigError as err:  # a usage error (a flag without its value)
        sys.stderr.write(f"healthcheck: {err}\n")
        return 2
    tls = None
    try:
        tls = security.load_tls(args.tls_cert, args.tls_key, args.tls_ca, args.tls_dir, args.tls_server_name)
    except ConfigError as err:
        problems += err.problems
    if problems:
        sys.stderr.write(f"healthcheck: {ConfigError(problems)}\n")
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    try:
        status = check(f"{host}:{args.port}", args.service, args.timeout, tls)
    except grpc.RpcError as err:
        code = err.code().name if hasattr(err, "code") else "UNKNOWN"
        details = err.details() if hasattr(err, "details") else str(err)
        sys.stderr.write(f"healthcheck: {host}:{args.port} {args.service!r}: {code}: {details}\n")
        return 1
    sys.stdout.write(f"{status}\n")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
