"""Server bootstrap: health checking, reflection, metrics, error mapping, graceful SIGTERM drain, and
the security options of :mod:`facenas.rpc.security` (mTLS, extra interceptors such as the API token).

A service builds its servicers (dependencies through constructors) and hands them to :func:`start`;
everything else every server needs is done here once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from facenas.errors import FacenasError, InvalidInput
from facenas.limits import MAX_ERROR_MESSAGE_CHARS, MAX_MESSAGE_BYTES, clip
from facenas.rpc import metrics, reflection
from facenas.rpc.health import TruthfulHealthServicer
from facenas.rpc.keepalive import KeepalivePolicy
from facenas.rpc.security import TlsConfig, add_port
from facenas.rpc.status import code_for

log = logging.getLogger(__name__)

#: (add_XServicer_to_server function, servicer instance, full service name)
Registration = tuple[Callable[[Any, grpc.Server], None], Any, str]


@dataclass(frozen=True)
class ServerConfig:
    """Where and how a server listens."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    metrics_port: int | None = 0  # None = no /metrics endpoint
    max_workers: int = 32  # every watch stream holds one while it is open
    grace_seconds: float = 10.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    keepalive: KeepalivePolicy | None = None  # None = KeepalivePolicy.from_env()
    tls: TlsConfig | None = None  # None = plaintext; else mTLS (clients need a certificate of the CA)
    reflection: bool = True
    interceptors: Sequence[grpc.ServerInterceptor] = ()  # type: ignore[type-arg]  # after metrics/errors


class _MetricsAndErrors(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every call and maps facenas errors to status codes in one place; a request that
    is not a valid message of its method's type is INVALID_ARGUMENT (gRPC itself would say INTERNAL)."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        deserializer = _lenient(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, service, method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, service, method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class _Undecodable:
    """Stands for a request that could not be decoded, so the call can answer INVALID_ARGUMENT (only the
    error's text is kept: its traceback would hold the request's bytes)."""

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as err:
            return _Undecodable(str(err))

    return decode


def _check_request(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidInput(f"the request is not a valid message for this method ({clip(request.error, 200)})")


def _abort(context: grpc.ServicerContext, err: Exception, service: str, method: str) -> None:
    code = code_for(err)
    if code == grpc.StatusCode.INTERNAL and not isinstance(err, FacenasError):
        log.exception("unhandled error", extra={"grpc_service": service, "grpc_method": method})
        message = f"internal error: {type(err).__name__}: {err}"
    else:
        message = str(err)
    # status details travel in trailing metadata: a huge message would break the reply itself
    context.abort(code, clip(message, MAX_ERROR_MESSAGE_CHARS))


def _finish(service: str, method: str, context: grpc.ServicerContext, began: float) -> None:
    code = context.code() if hasattr(context, "code") else None
    name = code.name if isinstance(code, grpc.StatusCode) else "OK"
    metrics.REQUESTS.labels(service, method, name).inc()
    metrics.HANDLING_SECONDS.labels(service, method).observe(time.perf_counter() - began)
    metrics.IN_FLIGHT.labels(service, method).dec()


def _wrap_unary(behavior: Any, service: str, method: str) -> Any:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        metrics.IN_FLIGHT.labels(service, method).inc()
        began = time.perf_counter()
        try:
            _check_request(request)
            return behavior(request, context)
        except Exception as err:
            if _is_abort(err):
                raise
            _abort(context, err, service, method)
        finally:
            _finish(service, method, context, began)

    return wrapper


def _wrap_stream(behavior: Any, service: str, method: str) -> Any:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        metrics.IN_FLIGHT.labels(service, method).inc()
        began = time.perf_counter()
        try:
            _check_request(request)
            yield from behavior(request, context)
        except Exception as err:
            if _is_abort(err):
                raise
            _abort(context, err, service, method)
        finally:
            _finish(service, method, context, began)

    return wrapper


def _is_abort(err: Exception) -> bool:
    """``context.abort`` raises a bare Exception after setting the status; let it through."""
    return type(err) is Exception and not err.args


class RunningServer:
    """A started server: its ports, health state and a graceful stop."""

    def __init__(
        self, server: grpc.Server, port: int, metrics_port: int | None, health: Any, names: Sequence[str]
    ):
        self.server = server
        self.port = port
        self.metrics_port = metrics_port
        self.health = health
        self.names = list(names)
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_serving(self, serving: bool) -> None:
        """SERVING or NOT_SERVING for every service name and the server as a whole (``""``); the
        ``liveness`` name is left SERVING (see :mod:`facenas.rpc.health`)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in [*self.names, ""]:
            self.health.set(name, status)

    def stop(self, grace: float) -> None:
        """Stop accepting work, let in-flight calls finish within ``grace`` seconds, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.set_serving(False)
        log.info("draining", extra={"grace_seconds": grace})
        self.server.stop(grace).wait()
        log.info("stopped")

    def wait(self) -> None:
        self.server.wait_for_termination()


def start(registrations: Sequence[Registration], config: ServerConfig) -> RunningServer:
    """Start a server with the given servicers plus health, reflection (unless off) and /metrics."""
    keepalive = config.keepalive or KeepalivePolicy.from_env()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="grpc"),
        interceptors=[_MetricsAndErrors(), *config.interceptors],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
            *keepalive.server_options(),
        ],
    )
    names = []
    for add, servicer, name in registrations:
        add(servicer, server)
        names.append(name)
    health_servicer = TruthfulHealthServicer()  # also "liveness", and why when NOT_SERVING
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        reflection.enable([*names, health.SERVICE_NAME], server)
    port = add_port(server, f"{config.host}:{config.port}", config.tls)
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    metrics_port = None
    if config.metrics_port is not None:
        httpd, _thread = start_http_server(config.metrics_port, addr=config.host)
        metrics_port = int(httpd.server_port)
    server.start()
    running = RunningServer(server, port, metrics_port, health_servicer, names)
    running.set_serving(True)
    log.info(
        "serving",
        extra={"port": port, "metrics_port": metrics_port, "services": names, "tls": config.tls is not None},
    )
    return running


def serve_until_signalled(
    running: RunningServer, grace: float, on_stop: Callable[[], None] | None = None
) -> None:
    """Block until SIGTERM/SIGINT, then drain gracefully (in-flight calls get ``grace`` seconds)."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stop.wait()
    if on_stop is not None:
        on_stop()
    running.stop(grace)
