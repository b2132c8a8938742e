"""Server bootstrap: health checking, reflection, metrics, error mapping, graceful SIGTERM drain.

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
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from facenas.errors import FacenasError
from facenas.rpc import metrics
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
    max_workers: int = 16
    grace_seconds: float = 10.0
    max_message_bytes: int = 16 << 20


class _MetricsAndErrors(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every call and maps facenas errors to status codes in one place."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _abort(context: grpc.ServicerContext, err: Exception, service: str, method: str) -> None:
    code = code_for(err)
    if code == grpc.StatusCode.INTERNAL and not isinstance(err, FacenasError):
        log.exception("unhandled error", extra={"grpc_service": service, "grpc_method": method})
        message = f"internal error: {type(err).__name__}: {err}"
    else:
        message = str(err)
    context.abort(code, message)


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
    """Start a server with the given servicers plus health, reflection and /metrics."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="grpc"),
        interceptors=[_MetricsAndErrors()],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    names = []
    for add, servicer, name in registrations:
        add(servicer, server)
        names.append(name)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    metrics_port = None
    if config.metrics_port is not None:
        httpd, _thread = start_http_server(config.metrics_port, addr=config.host)
        metrics_port = int(httpd.server_port)
    server.start()
    running = RunningServer(server, port, metrics_port, health_servicer, names)
    running.set_serving(True)
    log.info("serving", extra={"port": port, "metrics_port": metrics_port, "services": names})
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
